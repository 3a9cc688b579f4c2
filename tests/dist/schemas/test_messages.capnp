# Messages for the wire tests (tests/dist/wire_test.cpp).
@0xf03eff42b6fc7e00;

struct Ping {
  seq @0 :UInt64;
}

struct Chat {
  from @0 :Text;
  body @1 :Text;
  tags @2 :List(Text);
}

# A nested struct, a list of scalars, Data and a union.
struct Reading {
  sensor @0 :Sensor;
  values @1 :List(Float64);
  raw @2 :Data;
  status :union {
    ok @3 :Void;
    fault @4 :Text;
  }

  struct Sensor {
    id @0 :UInt32;
    name @1 :Text;
    position @2 :List(Int32);
  }
}

# A list of structs.
struct Batch {
  chats @0 :List(Chat);
  pings @1 :List(Ping);
}

# Recursive: builds messages nested deeper than a reader's nesting limit.
struct Chain {
  depth @0 :UInt32;
  next @1 :Chain;
}

# A list of blobs: its pointers can be crafted to alias one blob
# (an amplification attack, stopped by the traversal limit).
struct Blobs {
  items @0 :List(Data);
}
