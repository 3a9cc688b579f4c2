// ember::wire's type-erased half: the words of a message (copy, build,
// validation) and the registry of wire codecs. The design is at the top of
// include/ember/dist/wire.hpp.
#include "ember/dist/wire.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include <capnp/serialize.h>
#include <kj/exception.h>

#include "ember/core/error.hpp"
#include "ember/core/preempt.hpp"

namespace ember::dist::detail {

static_assert(std::endian::native == std::endian::little,
              "ember::wire stores Cap'n Proto's little-endian words as they are");

namespace {

constexpr std::size_t word_bytes = sizeof(capnp::word);

// The empty message: one segment of one word, a null root pointer.
alignas(capnp::word) constexpr unsigned char empty_message[2 * word_bytes] = {
    0, 0, 0, 0,  // segment count - 1
    1, 0, 0, 0,  // segment 0: one word
    0, 0, 0, 0, 0, 0, 0, 0};

// Limits of from_bytes (see wire.hpp, "Validation").
constexpr std::uint64_t max_segments = 512;  // as capnp's FlatArrayMessageReader
constexpr std::uint64_t default_traversal_words = capnp::ReaderOptions().traversalLimitInWords;
constexpr int nesting_limit = capnp::ReaderOptions().nestingLimit;

std::uint32_t load_u32(const std::byte* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// capnp's reason, without the failed condition kj puts before it
// ("expected nestingLimit > 0 [0 > 0]; Message is too deeply-nested.").
std::string describe(const kj::Exception& e) {
  std::string d(e.getDescription().cStr());
  if (d.rfind("expected ", 0) == 0) {
    if (auto end = d.find("; "); end != std::string::npos) d.erase(0, end + 2);
  }
  return d;
}

}  // namespace

// [segment table: 0, n][segment: n zero words]
wire_words wire_words::allocate(std::size_t segment_words) {
  if (segment_words >= (std::size_t(1) << 29)) {  // capnp's largest segment
    throw error(errc::system_limit, "ember::wire: a message of " + std::to_string(segment_words) +
                                        " words is larger than one Cap'n Proto segment (4 GiB); "
                                        "send large data as several messages");
  }
  wire_words w;
  std::size_t total = segment_words + 1;
  w.words_ = static_cast<capnp::word*>(::operator new(total * word_bytes));
  w.size_ = total;
  std::memset(w.words_, 0, total * word_bytes);
  const std::uint32_t table[2] = {0, static_cast<std::uint32_t>(segment_words)};
  std::memcpy(w.words_, table, sizeof table);
  return w;
}

kj::ArrayPtr<capnp::word> wire_words::mutable_segment() noexcept {
  return kj::arrayPtr(words_ + 1, size_ - 1);
}

wire_words::~wire_words() {
  if (words_) ::operator delete(words_);
}

wire_words::wire_words(const wire_words& other) : size_(other.size_) {
  if (other.words_) {
    words_ = static_cast<capnp::word*>(::operator new(size_ * word_bytes));
    std::memcpy(words_, other.words_, size_ * word_bytes);
  }
}

wire_words::wire_words(wire_words&& other) noexcept : words_(other.words_), size_(other.size_) {
  other.words_ = nullptr;
  other.size_ = 0;
}

wire_words& wire_words::operator=(const wire_words& other) {
  if (this != &other) *this = wire_words(other);
  return *this;
}

wire_words& wire_words::operator=(wire_words&& other) noexcept {
  if (this != &other) {
    if (words_) ::operator delete(words_);
    words_ = other.words_;
    size_ = other.size_;
    other.words_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

const capnp::word* wire_words::segment() const noexcept {
  if (!words_) return reinterpret_cast<const capnp::word*>(empty_message + word_bytes);
  return words_ + 1;
}

std::span<const std::byte> wire_words::bytes() const noexcept {
  if (!words_) return std::as_bytes(std::span(empty_message));
  return {reinterpret_cast<const std::byte*>(words_), size_ * word_bytes};
}

std::string display_name(capnp::Schema schema) {
  return std::string(schema.getProto().getDisplayName().cStr());
}

wire_words wire_words::copy_of(capnp::AnyStruct::Reader root, capnp::Schema schema) {
  try {
    capnp::MessageSize size = root.totalSize();
    if (size.capCount != 0) {
      throw error(errc::bad_message, "ember::wire<" + display_name(schema) +
                                         ">: the message holds capabilities, which a wire "
                                         "message cannot carry (leave interface fields null)");
    }
    wire_words w = allocate(size.wordCount + 1);
    capnp::copyToUnchecked(root, w.mutable_segment());
    return w;
  } catch (const kj::Exception& e) {
    throw error(errc::bad_message, "ember::wire<" + display_name(schema) +
                                       ">: cannot copy the message: " + describe(e));
  }
}

wire_words wire_words::build(void (*fill)(void* ctx, capnp::AnyPointer::Builder root), void* ctx,
                             capnp::Schema schema) {
  // Small messages are built in place on the stack; larger ones spill into
  // segments capnp allocates (calloc).
  constexpr std::size_t scratch_words = 128;
  alignas(capnp::word) unsigned char scratch[scratch_words * word_bytes];
  std::memset(scratch, 0, sizeof scratch);
  capnp::MallocMessageBuilder builder(
      kj::arrayPtr(reinterpret_cast<capnp::word*>(scratch), scratch_words));
  fill(ctx, builder.getRoot<capnp::AnyPointer>());
  auto segments = builder.getSegmentsForOutput();
  if (segments.size() == 1) {
    // One segment, built here: no far pointers; copied as it is.
    wire_words w = allocate(segments[0].size());
    std::memcpy(w.mutable_segment().begin(), segments[0].begin(),
                segments[0].size() * word_bytes);
    return w;
  }
  // Several segments: copied into one.
  return copy_of(builder.getRoot<capnp::AnyPointer>().asReader().getAs<capnp::AnyStruct>(),
                 schema);
}

wire_words wire_words::from_bytes(std::span<const std::byte> bytes, capnp::Schema schema) {
  auto malformed = [&](const std::string& why) {
    return error(errc::bad_message, "ember::wire<" + display_name(schema) +
                                        ">::from_bytes: malformed message: " + why);
  };
  if (bytes.empty()) throw malformed("the input is empty");
  if (bytes.size() % word_bytes != 0) {
    throw malformed(std::to_string(bytes.size()) + " bytes is not a whole number of 8-byte words");
  }
  const std::uint64_t words = bytes.size() / word_bytes;

  // The segment table: count - 1, then each segment's size in words,
  // padded to a whole word.
  const std::uint64_t segment_count = std::uint64_t(load_u32(bytes.data())) + 1;
  if (segment_count > max_segments) {
    throw malformed("the segment table declares " + std::to_string(segment_count) +
                    " segments (at most " + std::to_string(max_segments) + ")");
  }
  const std::uint64_t table_words = segment_count / 2 + 1;
  if (words < table_words) {
    throw malformed("the segment table is truncated: " + std::to_string(segment_count) +
                    " segments need " + std::to_string(table_words * word_bytes) +
                    " bytes of table, the input has " + std::to_string(bytes.size()));
  }
  std::uint64_t declared = 0;
  for (std::uint64_t i = 0; i < segment_count; ++i) {
    std::uint32_t size = load_u32(bytes.data() + 4 * (i + 1));
    if (i == 0 && size == 0) {
      throw malformed("the first segment is empty (it must hold at least the root pointer)");
    }
    declared += size;
  }
  const std::uint64_t present = words - table_words;
  if (declared > present) {
    throw malformed("the segments declare " + std::to_string(declared) + " words but only " +
                    std::to_string(present) + " follow the segment table (truncated?)");
  }
  if (declared < present) {
    throw malformed(std::to_string((present - declared) * word_bytes) +
                    " bytes follow the end of the message");
  }

  // capnp reads words in place: they must be word-aligned.
  std::unique_ptr<capnp::word[]> aligned;
  const capnp::word* input = reinterpret_cast<const capnp::word*>(bytes.data());
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(capnp::word) != 0) {
    aligned.reset(new capnp::word[words]);
    std::memcpy(aligned.get(), bytes.data(), bytes.size());
    input = aligned.get();
  }

  capnp::ReaderOptions options;
  options.traversalLimitInWords = std::max(default_traversal_words, words);
  options.nestingLimit = nesting_limit;
  try {
    // Twice through the checked reader, each with its own traversal budget:
    // once to measure (and check every pointer), once to copy.
    std::uint64_t size;
    {
      capnp::FlatArrayMessageReader reader(kj::arrayPtr(input, words), options);
      capnp::AnyPointer::Reader root = reader.getRoot<capnp::AnyPointer>();
      switch (root.getPointerType()) {
        case capnp::PointerType::NULL_:
        case capnp::PointerType::STRUCT:
          break;
        case capnp::PointerType::LIST:
          throw malformed("the root is a list, not a struct");
        case capnp::PointerType::CAPABILITY:
          throw malformed("the root is a capability, not a struct");
      }
      capnp::MessageSize total = root.targetSize();
      if (total.capCount != 0) {
        throw malformed("the message holds " + std::to_string(total.capCount) +
                        " capabilities, which a wire message cannot carry");
      }
      size = total.wordCount;
    }
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(input, words), options);
    wire_words w = allocate(size + 1);
    capnp::copyToUnchecked(reader.getRoot<capnp::AnyStruct>(), w.mutable_segment());
    return w;
  } catch (const kj::Exception& e) {
    throw malformed(describe(e));
  }
}

// The registry ----------------------------------------------------------------
//
// Codecs are registered rarely (before main, mostly) and looked up on every
// remote send and receive, from any thread. Two insert-only open-addressing
// tables of codec pointers, by key and by schema id: a slot goes from null
// to a codec once and never changes again. Writers hold the registry mutex;
// readers take no lock: they probe from the hash until they find their
// codec or a null slot. A slot is stored with release after its codec is
// complete and loaded with acquire. A table is at most half full; a writer
// that would fill it more builds a table twice the size, fills it, and
// publishes it (release) in place of the old one, which is kept (a reader may
// still be probing it; it is never freed, nor are codecs). So a lookup that
// races with the registration of its own type may miss it, which is why a
// type must be registered before its first message (wire.hpp).
// Rejected: a mutex on the read path (every remote send), an immutable
// snapshot per registration (n snapshots of n entries kept forever).

namespace {

struct codec_table {
  explicit codec_table(std::size_t capacity)
      : mask(capacity - 1), slots(new std::atomic<const wire_codec*>[capacity]) {
    for (std::size_t i = 0; i < capacity; ++i) slots[i].store(nullptr, std::memory_order_relaxed);
  }
  std::size_t capacity() const noexcept { return mask + 1; }

  const std::size_t mask;  // capacity - 1; capacity a power of two
  std::unique_ptr<std::atomic<const wire_codec*>[]> slots;  // null, or a codec for good
};

std::size_t mix(std::uint64_t v) noexcept {
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  return static_cast<std::size_t>(v);
}
std::size_t hash_of_key(ember::detail::type_key key) noexcept {
  return mix(reinterpret_cast<std::uintptr_t>(key));
}
std::size_t hash_of_schema(std::uint64_t id) noexcept { return mix(id); }

struct key_index {
  static std::size_t hash(const wire_codec& c) noexcept { return hash_of_key(c.key); }
};
struct schema_index {
  static std::size_t hash(const wire_codec& c) noexcept { return hash_of_schema(c.schema_id); }
};

template <class Match>
const wire_codec* probe(const codec_table* t, std::size_t hash, Match match) noexcept {
  for (std::size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
    const wire_codec* c = t->slots[i].load(std::memory_order_acquire);
    if (c == nullptr || match(*c)) return c;
  }
}

class codec_registry {
 public:
  codec_registry() {
    by_key_.store(new_table(initial_capacity), std::memory_order_relaxed);
    by_schema_.store(new_table(initial_capacity), std::memory_order_relaxed);
  }

  const wire_codec* find_key(ember::detail::type_key key) const noexcept {
    return probe(by_key_.load(std::memory_order_acquire), hash_of_key(key),
                 [key](const wire_codec& c) { return c.key == key; });
  }
  const wire_codec* find_schema(std::uint64_t id) const noexcept {
    return probe(by_schema_.load(std::memory_order_acquire), hash_of_schema(id),
                 [id](const wire_codec& c) { return c.schema_id == id; });
  }

  void add(const wire_codec& codec) {
    if (codec.key == nullptr || codec.bytes == nullptr || codec.decode == nullptr) {
      throw error(errc::invalid_argument, "register_codec: the codec for " + codec.name +
                                              " lacks its key, bytes or decode");
    }
    no_preempt hold;  // an OS mutex (see the README on mutexes in processes)
    global_heap_scope global;  // codecs and tables live as long as the program
    std::lock_guard lock(mu_);
    const wire_codec* same_schema = find_schema(codec.schema_id);
    if (same_schema != nullptr && same_schema->name != codec.name) {
      throw error(errc::invalid_argument,
                  "register_codec: schema id " + hex(codec.schema_id) + " names both " +
                      same_schema->name + " and " + codec.name +
                      "; two Cap'n Proto schemas share an id (a copied file id? give each "
                      "file its own with `capnp id`)");
    }
    if (find_key(codec.key) != nullptr) return;  // registered already
    codecs_.push_back(codec);
    const wire_codec* stored = &codecs_.back();
    insert<key_index>(by_key_, keys_, stored);
    if (same_schema == nullptr) insert<schema_index>(by_schema_, schemas_, stored);
  }

 private:
  static constexpr std::size_t initial_capacity = 64;

  codec_table* new_table(std::size_t capacity) {
    tables_.push_back(std::make_unique<codec_table>(capacity));
    return tables_.back().get();
  }

  // Under mu_.
  template <class Index>
  void insert(std::atomic<codec_table*>& current, std::size_t& count, const wire_codec* codec) {
    codec_table* t = current.load(std::memory_order_relaxed);
    if (2 * (count + 1) > t->capacity()) {
      codec_table* bigger = new_table(2 * t->capacity());
      for (std::size_t i = 0; i < t->capacity(); ++i) {
        const wire_codec* c = t->slots[i].load(std::memory_order_relaxed);
        if (c != nullptr) place<Index>(bigger, c);
      }
      current.store(bigger, std::memory_order_release);
      t = bigger;
    }
    place<Index>(t, codec);
    ++count;
  }
  template <class Index>
  static void place(codec_table* t, const wire_codec* codec) noexcept {
    for (std::size_t i = Index::hash(*codec) & t->mask;; i = (i + 1) & t->mask) {
      if (t->slots[i].load(std::memory_order_relaxed) == nullptr) {
        t->slots[i].store(codec, std::memory_order_release);
        return;
      }
    }
  }
  static std::string hex(std::uint64_t v) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 60; shift >= 0; shift -= 4) s += digits[(v >> shift) & 0xf];
    return s;
  }

  std::mutex mu_;
  std::deque<wire_codec> codecs_;                      // under mu_; addresses stable, never freed
  std::vector<std::unique_ptr<codec_table>> tables_;   // under mu_; every table ever published
  std::size_t keys_ = 0;                               // under mu_: entries in the key tables
  std::size_t schemas_ = 0;                            // under mu_: entries in the schema tables
  std::atomic<codec_table*> by_key_{nullptr};          // stored under mu_ (release); read lock-free
  std::atomic<codec_table*> by_schema_{nullptr};
};

// Made on first use (registrations run in static initializers, in any
// order) and never destroyed, so that a static initializer or destructor
// elsewhere can still use it.
codec_registry& registry() {
  static codec_registry* r = [] {
    global_heap_scope global;
    return new codec_registry;
  }();
  return *r;
}

}  // namespace

void register_codec(const wire_codec& codec) { registry().add(codec); }

const wire_codec* codec_by_key(ember::detail::type_key key) noexcept {
  return registry().find_key(key);
}

const wire_codec* codec_by_schema(std::uint64_t schema_id) noexcept {
  return registry().find_schema(schema_id);
}

}  // namespace ember::dist::detail
