@0xd03c218dda8c6c1e;
# The messages of W10 (bench/w10_dist.cpp): node A's driver and node B's
# echo. Pids travel as UInt64: ember::cluster_pid(p).bits().

# A round trip: A sends it with its own pid in `from`; B answers with a
# Ping of the same seq, its own pid in `from`.
struct Ping {
  seq @0 :UInt64;
  from @1 :UInt64;
}

# A one-way message; B counts them and checks they come in seq order.
struct Msg {
  seq @0 :UInt64;
}

# The end of a one-way run: `count` messages were sent; B answers `from`
# with an Ack.
struct Done {
  count @0 :UInt64;
  from @1 :UInt64;
}

# What B saw since the previous Done: `count` Msgs, all in order or not,
# and how many Pings it has answered in all.
struct Ack {
  count @0 :UInt64;
  inOrder @1 :Bool;
  pings @2 :UInt64;
}
