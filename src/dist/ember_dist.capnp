@0xcedc6124db0a2302;
# The distribution layer's own messages (src/dist/node.cpp): what a node
# asks another node's spawner, and its answer.

# Spawn the function registered as `function` with `argument` (the bytes
# of a wire<S> whose schema id is `schemaId`; 0 and empty: no argument).
struct SpawnRequest {
  function @0 :Text;
  schemaId @1 :UInt64;
  argument @2 :Data;
}

# The new process (its cluster pid), or why there is none.
struct SpawnReply {
  pid @0 :UInt64;
  error @1 :Text;
}
