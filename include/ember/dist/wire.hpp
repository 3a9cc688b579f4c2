// ember::wire<S>: a Cap'n Proto message whose root is struct S, as an ember
// message. It is how a value travels to a process on another node:
//
//   // chat.capnp:  struct Chat { from @0 :Text; body @1 :Text; }
//   auto m = ember::wire<Chat>::build([](Chat::Builder b) {
//     b.setFrom("ada");
//     b.setBody("hello");
//   });
//   ember::send(remote_pid, m);
//   ...
//   ember::receive([](const ember::wire<Chat>& m) { use(m.get().getBody()); });
//
// Schemas are compiled into C++ with ember_capnp_generate() (CMake, in
// cmake/EmberCapnp.cmake). Locally a wire<S> is an ordinary message value:
// sent, copied into the receiver's heap, received by type.
//
// Storage. A wire holds its message as one flat array of 64-bit words, the
// standard Cap'n Proto stream framing: a segment table (segment count - 1,
// then each segment's size in words) followed by the segments. A wire always
// has exactly one segment, with no far pointers: either what
// capnp::copyToUnchecked writes (the root pointer, then the objects it
// reaches, nothing else), or, for build(), the one segment a builder filled
// (it may keep zeroed holes where the fill overwrote a pointer field; a
// build that outgrows one segment is copied into one). The words come from
// plain operator new, so
// the array lives in the heap that is current when the wire is made or
// copied: when ember copies a message into a receiving process's heap, the
// copy's words land in that heap and go with it.
//
// Why flat words. (1) bytes() is the wire form as is: sending to another node
// writes the array, with no encoding step. (2) Copying a wire is one
// allocation and a memcpy, which is what ember does to every message it
// delivers. (3) get() reads in place with capnp::readMessageUnchecked: no
// MessageReader object, so nothing to keep alive beside the words, nothing
// allocated, and no mutable state (a MessageReader builds its arena lazily
// and counts its traversal limit down on every read, so it could not be read
// from two threads, and a long-lived one would run out of traversal budget).
// Reading unchecked is sound only for trusted words, hence the invariant
// above: every way to make a wire produces it (build and wire(reader) copy
// through capnp's own copier; from_bytes validates, then copies). Rejected:
// keeping capnp::MallocMessageBuilder segments (several allocations in the
// global heap per message, by calloc, outside any process heap) and keeping
// a FlatArrayMessageReader inside the wire (~200 bytes, rebuilt on every
// copy, the threading and budget problems above).
//
// Validation. from_bytes accepts any well-formed Cap'n Proto message
// (several segments, far pointers, a newer or older version of S) and
// refuses with ember::error(errc::bad_message, reason) input that is empty,
// not a whole number of words, whose segment table is truncated or declares
// more words than follow (or fewer: trailing bytes), whose first segment is
// empty, whose root is not a struct, or that carries capabilities. Then it
// reads the whole message through capnp's checked reader (bounds of every
// pointer, nesting limit 64, traversal limit the larger of capnp's default
// 8 Mi words and the message's own size, so that aliased pointers cannot
// amplify a small message into a long read), converting capnp's kj::Exception
// into the same error, and copies it into the single-segment form. So a
// message nested deeper than 64 levels, which build() makes without
// complaint, is refused by the receiving node. Interface (capability) fields
// must stay null: a message holding capabilities is refused.
//
// Registry. The distribution layer sees only envelopes: to send one to
// another node it asks codec_by_key(envelope->key) for the codec of the
// message's type (nullptr: not a wire message, errc::not_serializable), and
// sends codec->schema_id with codec->bytes(envelope). The receiving node
// looks the id up with codec_by_schema and makes an envelope with
// codec->decode(bytes). Every wire<S> registers its codec before main (a
// static member of wire_registration<S>, used by each constructor of
// wire<S>), so a node knows every type it builds or decodes. A node that
// only ever receives a type, without naming wire<S> anywhere, must say so
// with register_wire_types<S...>(), before the first such message arrives.
// Lookups are lock-free: every remote send makes one.
//
// Lifetime of get(): the returned S::Reader points into the wire's words. It
// is valid while the wire (or the wire it is moved into) lives and is not
// assigned to. A wire is immutable otherwise: a const wire can be read from
// any number of threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/schema.h>

#include "ember/core/heap.hpp"
#include "ember/core/message.hpp"

namespace ember {

template <class S>
class wire;

namespace dist::detail {

// The words of one wire message (see the top of this file). The type-erased
// part of wire<S>, in src/dist/wire.cpp.
class wire_words {
 public:
  // The empty message: its root is a null pointer, which reads as S's
  // default value. Allocates nothing.
  wire_words() noexcept = default;
  ~wire_words();
  wire_words(const wire_words& other);
  wire_words(wire_words&& other) noexcept;  // leaves `other` empty
  wire_words& operator=(const wire_words& other);
  wire_words& operator=(wire_words&& other) noexcept;

  // A copy of `root` (checked: throws error(bad_message) if it cannot be read).
  static wire_words copy_of(capnp::AnyStruct::Reader root, capnp::Schema schema);
  // A message built by fill(ctx, root), where root is the message's root
  // pointer, still null.
  static wire_words build(void (*fill)(void* ctx, capnp::AnyPointer::Builder root), void* ctx,
                          capnp::Schema schema);
  // Validates `bytes` as a message of `schema` and copies it (see the top).
  static wire_words from_bytes(std::span<const std::byte> bytes, capnp::Schema schema);

  // The one segment: the root pointer, then the content.
  const capnp::word* segment() const noexcept;
  // The whole message, segment table included.
  std::span<const std::byte> bytes() const noexcept;

 private:
  // A message of one segment of `segment_words` zero words.
  static wire_words allocate(std::size_t segment_words);
  kj::ArrayPtr<capnp::word> mutable_segment() noexcept;

  capnp::word* words_ = nullptr;  // nullptr: the empty message (a static constant)
  std::size_t size_ = 0;          // in words, segment table included
};

// "file.capnp:Outer.Inner", capnp's display name of a schema node.
std::string display_name(capnp::Schema schema);

// What the distribution layer knows of a wire type.
struct wire_codec {
  std::uint64_t schema_id;
  ember::detail::type_key key;  // key_of<wire<S>>()
  std::string name;             // display name of S
  // The flat bytes of an envelope that holds a wire<S> (valid while it lives).
  std::span<const std::byte> (*bytes)(const ember::detail::envelope*);
  // A new envelope in transit (global heap) holding wire<S>::from_bytes(bytes);
  // throws error(bad_message) if the bytes are malformed.
  ember::detail::envelope* (*decode)(std::span<const std::byte>);
};

// Adds a codec. Registering the same schema id and key again does nothing.
// The same schema id under another key with the same name (one type seen
// through two copies of its type tag, as across shared libraries) adds the
// key as an alias. The same schema id under another name is two schemas
// sharing an id (a copied file id): error(invalid_argument), which from the
// registration before main ends the program there, naming both. Thread-safe.
void register_codec(const wire_codec& codec);
// The codec of a message type, or nullptr if it is not a registered wire
// type. Lock-free; the codec lives as long as the program.
const wire_codec* codec_by_key(ember::detail::type_key key) noexcept;
// The codec for a schema id, or nullptr. Lock-free.
const wire_codec* codec_by_schema(std::uint64_t schema_id) noexcept;

template <class S>
struct wire_registration {
  static wire_codec codec() {
    return wire_codec{
        capnp::typeId<S>(),
        ember::detail::key_of<wire<S>>(),
        display_name(capnp::Schema::from<S>()),
        [](const ember::detail::envelope* e) {
          return static_cast<const ember::detail::value_envelope<wire<S>>*>(e)->value.bytes();
        },
        [](std::span<const std::byte> bytes) -> ember::detail::envelope* {
          global_heap_scope transit;  // as make_envelope: in transit, in the global heap
          return new ember::detail::value_envelope<wire<S>>(wire<S>::from_bytes(bytes));
        }};
  }
  // Initialized before main (or when the library holding it is loaded).
  static inline const bool registered = (register_codec(codec()), true);
};

}  // namespace dist::detail

template <class S>
class wire {
  static_assert(capnp::kind<S>() == capnp::Kind::STRUCT,
                "ember::wire<S>: S must be a struct type generated by the Cap'n Proto compiler "
                "(see ember_capnp_generate)");

 public:
  using schema_type = S;

  // A message whose root has S's default value.
  wire() noexcept { registered(); }
  // A copy of the struct `r` reads (throws error(bad_message) if r cannot be read).
  explicit wire(typename S::Reader r)
      : words_(dist::detail::wire_words::copy_of(r, capnp::Schema::from<S>())) {
    registered();
  }
  // A message built by fill(S::Builder) on a fresh, default root.
  template <class F>
  static wire build(F&& fill) {
    static_assert(std::is_invocable_v<F&, typename S::Builder>,
                  "ember::wire<S>::build: fill must be callable with S::Builder");
    using fill_type = std::remove_reference_t<F>;
    auto trampoline = [](void* ctx, capnp::AnyPointer::Builder root) {
      (*static_cast<fill_type*>(ctx))(root.initAs<S>());
    };
    return wire(dist::detail::wire_words::build(
        trampoline, const_cast<void*>(static_cast<const void*>(std::addressof(fill))),
        capnp::Schema::from<S>()));
  }
  // Validates and copies a message in Cap'n Proto's standard framing (as
  // bytes() returns). Throws error(bad_message) saying what is wrong.
  static wire from_bytes(std::span<const std::byte> bytes) {
    return wire(dist::detail::wire_words::from_bytes(bytes, capnp::Schema::from<S>()));
  }

  // The root. Valid while this wire lives and is not assigned to (a move
  // hands the words, and the readers into them, to the new wire).
  typename S::Reader get() const noexcept {
    return capnp::readMessageUnchecked<S>(words_.segment());
  }
  // The message in Cap'n Proto's standard framing: segment table, then the
  // one segment. Valid as get() is.
  std::span<const std::byte> bytes() const noexcept { return words_.bytes(); }

  static constexpr std::uint64_t schema_id() noexcept { return capnp::typeId<S>(); }
  // capnp's display name of S: "file.capnp:Outer.Inner".
  static std::string type_name() { return dist::detail::display_name(capnp::Schema::from<S>()); }

 private:
  explicit wire(dist::detail::wire_words w) noexcept : words_(std::move(w)) { registered(); }
  static void registered() noexcept { (void)dist::detail::wire_registration<S>::registered; }

  dist::detail::wire_words words_;
};

// Registers the codecs of wire<S>... now. For a node that receives a type
// it never builds or decodes by name, so that it can decode the first one.
template <class... S>
void register_wire_types() {
  (dist::detail::register_codec(dist::detail::wire_registration<S>::codec()), ...);
}

}  // namespace ember
