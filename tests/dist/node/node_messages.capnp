@0xba6e76f7a04367f3;
# Messages of the node tests (tests/dist/node_test.cpp, node_peer.cpp).

# A numbered message; `from` is the sender's cluster pid (ember::cluster_pid).
struct Seq {
  n @0 :UInt64;
  from @1 :UInt64;
}

# Text, for exit reasons and greetings.
struct Note {
  text @0 :Text;
}

# What a receiver saw: how many, and whether in order.
struct Tally {
  count @0 :UInt64;
  inOrder @1 :Bool;
}
