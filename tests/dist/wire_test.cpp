// Wire messages: ember::wire<S> holds a Cap'n Proto message as one flat
// array of words; it is an ordinary ember message locally and its bytes are
// what travels between nodes; from_bytes validates what comes in; the codec
// registry lets the distribution layer serialize and decode envelopes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <ember/dist/wire.hpp>

#include "ember_test.hpp"
#include "schemas/test_messages.capnp.h"

namespace {

using namespace ember_test;
using ember::errc;
using ember::pid;
using ember::wire;
namespace dd = ember::dist::detail;

using bytes_t = std::vector<std::byte>;

bytes_t to_vector(std::span<const std::byte> s) { return bytes_t(s.begin(), s.end()); }

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// "from|body|tag,tag"
std::string describe(Chat::Reader c) {
  std::string s = text(c.getFrom()) + "|" + text(c.getBody()) + "|";
  bool first = true;
  for (auto t : c.getTags()) {
    if (!first) s += ",";
    s += text(t);
    first = false;
  }
  return s;
}

// Some text beyond ASCII, without NULs.
const std::string unicode = "h\xc3\xa9llo \xe2\x80\x94 \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8e\x89";

wire<Chat> make_chat(const std::string& from, const std::string& body,
                     const std::vector<std::string>& tags) {
  return wire<Chat>::build([&](Chat::Builder c) {
    c.setFrom(from);
    c.setBody(body);
    auto list = c.initTags(static_cast<unsigned>(tags.size()));
    for (unsigned i = 0; i < tags.size(); ++i) list.set(i, tags[i]);
  });
}

// Every byte value, zeros included, twice.
std::vector<capnp::byte> every_byte() {
  std::vector<capnp::byte> v;
  for (int round = 0; round < 2; ++round)
    for (int b = 0; b < 256; ++b) v.push_back(static_cast<capnp::byte>(b));
  return v;
}

// The code and text of the error that f throws ("no error" if none).
template <class F>
std::pair<errc, std::string> error_of(F&& f) {
  try {
    f();
  } catch (const ember::error& e) {
    return {e.code(), e.what()};
  }
  return {errc::invalid_argument, "no error"};
}

// Hand-made messages ---------------------------------------------------------

void put_u32(bytes_t& b, std::size_t at, std::uint32_t v) {
  if (b.size() < at + 4) b.resize(at + 4);
  std::memcpy(b.data() + at, &v, 4);
}
void put_u64(bytes_t& b, std::size_t at, std::uint64_t v) {
  if (b.size() < at + 8) b.resize(at + 8);
  std::memcpy(b.data() + at, &v, 8);
}
// Cap'n Proto pointers (encoding spec: struct, list, far).
std::uint64_t struct_ptr(std::int32_t offset, std::uint16_t data_words, std::uint16_t pointers) {
  return (std::uint64_t(std::uint32_t(offset) << 2)) | (std::uint64_t(data_words) << 32) |
         (std::uint64_t(pointers) << 48);
}
std::uint64_t list_ptr(std::int32_t offset, unsigned element_size, std::uint32_t count) {
  return 1u | (std::uint64_t(std::uint32_t(offset) << 2)) | (std::uint64_t(element_size) << 32) |
         (std::uint64_t(count) << 35);
}
std::uint64_t far_ptr(std::uint32_t segment, std::uint32_t offset) {
  return 2u | (std::uint64_t(offset) << 3) | (std::uint64_t(segment) << 32);
}
// A one-segment message with these words.
bytes_t one_segment(const std::vector<std::uint64_t>& words) {
  bytes_t b;
  put_u32(b, 0, 0);
  put_u32(b, 4, static_cast<std::uint32_t>(words.size()));
  for (std::size_t i = 0; i < words.size(); ++i) put_u64(b, 8 * (i + 1), words[i]);
  return b;
}

// Building and reading ---------------------------------------------------------

TEST(wire, default_wire_reads_as_the_default_struct) {
  wire<Chat> w;
  EXPECT_EQ(describe(w.get()), "||");
  EXPECT_FALSE(w.get().hasTags());
  EXPECT_EQ(wire<Ping>().get().getSeq(), 0u);
  EXPECT_EQ(w.bytes().size(), 16u) << "segment table and a null root pointer";
  EXPECT_EQ(describe(wire<Chat>::from_bytes(w.bytes()).get()), "||");
}

TEST(wire, build_then_get_round_trips_a_scalar) {
  auto w = wire<Ping>::build([](Ping::Builder p) { p.setSeq(0xfedcba9876543210ull); });
  EXPECT_EQ(w.get().getSeq(), 0xfedcba9876543210ull);
}

TEST(wire, build_then_get_round_trips_text_and_a_list_of_text) {
  auto w = make_chat("ada", unicode, {"a", "", unicode, "last"});
  EXPECT_EQ(text(w.get().getFrom()), "ada");
  EXPECT_EQ(text(w.get().getBody()), unicode);
  ASSERT_EQ(w.get().getTags().size(), 4u);
  EXPECT_EQ(text(w.get().getTags()[1]), "");
  EXPECT_EQ(text(w.get().getTags()[2]), unicode);
  EXPECT_EQ(describe(w.get()), "ada|" + unicode + "|a,," + unicode + ",last");
}

TEST(wire, build_then_get_round_trips_a_nested_struct_scalars_data_and_a_union) {
  const auto raw = every_byte();
  auto w = wire<Reading>::build([&](Reading::Builder r) {
    auto s = r.initSensor();
    s.setId(7);
    s.setName(unicode);
    auto pos = s.initPosition(3);
    pos.set(0, -1);
    pos.set(1, 0);
    pos.set(2, 2147483647);
    auto values = r.initValues(3);
    values.set(0, 1.5);
    values.set(1, -0.0);
    values.set(2, 1e300);
    r.setRaw(capnp::Data::Reader(raw.data(), raw.size()));
    r.getStatus().setFault("overheat");
  });
  auto r = w.get();
  EXPECT_EQ(r.getSensor().getId(), 7u);
  EXPECT_EQ(text(r.getSensor().getName()), unicode);
  ASSERT_EQ(r.getSensor().getPosition().size(), 3u);
  EXPECT_EQ(r.getSensor().getPosition()[0], -1);
  EXPECT_EQ(r.getSensor().getPosition()[2], 2147483647);
  ASSERT_EQ(r.getValues().size(), 3u);
  EXPECT_EQ(r.getValues()[0], 1.5);
  EXPECT_EQ(r.getValues()[2], 1e300);
  auto data = r.getRaw();
  ASSERT_EQ(data.size(), raw.size());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), raw.begin())) << "Data with zero bytes";
  ASSERT_TRUE(r.getStatus().isFault());
  EXPECT_EQ(text(r.getStatus().getFault()), "overheat");
}

TEST(wire, build_then_get_round_trips_lists_of_structs) {
  auto w = wire<Batch>::build([](Batch::Builder b) {
    auto chats = b.initChats(2);
    chats[0].setFrom("x");
    chats[1].setBody("y");
    chats[1].initTags(1).set(0, "t");
    auto pings = b.initPings(100);
    for (unsigned i = 0; i < 100; ++i) pings[i].setSeq(i * i);
  });
  auto b = w.get();
  ASSERT_EQ(b.getChats().size(), 2u);
  EXPECT_EQ(describe(b.getChats()[0]), "x||");
  EXPECT_EQ(describe(b.getChats()[1]), "|y|t");
  ASSERT_EQ(b.getPings().size(), 100u);
  EXPECT_EQ(b.getPings()[99].getSeq(), 99u * 99u);
}

TEST(wire, large_message_is_stored_as_one_segment) {
  // Larger than the builder's first segment: capnp spreads it over
  // several segments, which the wire copies into one.
  std::string body(300'000, 'b');
  auto w = make_chat("big", body, std::vector<std::string>(1000, "tag"));
  EXPECT_EQ(text(w.get().getBody()), body);
  EXPECT_EQ(w.get().getTags().size(), 1000u);
  std::uint32_t segments_minus_one;
  std::memcpy(&segments_minus_one, w.bytes().data(), 4);
  EXPECT_EQ(segments_minus_one, 0u);
  EXPECT_EQ(describe(wire<Chat>::from_bytes(w.bytes()).get()), describe(w.get()));
}

TEST(wire, wire_from_a_reader_is_a_copy_independent_of_the_source) {
  std::optional<wire<Chat>> w;
  {
    capnp::MallocMessageBuilder source;
    auto c = source.initRoot<Chat>();
    c.setFrom("src");
    c.setBody(unicode);
    c.initTags(1).set(0, "t");
    w.emplace(c.asReader());
    c.setFrom("changed");  // after the copy
  }  // the source message is gone
  EXPECT_EQ(describe(w->get()), "src|" + unicode + "|t");
}

TEST(wire, locally_built_message_deeper_than_the_nesting_limit_reads_fine) {
  auto w = wire<Chain>::build([](Chain::Builder c) {
    for (unsigned d = 0; d < 200; ++d) {
      c.setDepth(d);
      c = c.initNext();
    }
  });
  unsigned depth = 0;
  for (auto c = w.get(); c.hasNext(); c = c.getNext()) ++depth;
  EXPECT_EQ(depth, 200u);
}

// A wire is an ordinary message value -----------------------------------------

static_assert(ember::detail::sendable_value<wire<Chat>>);
static_assert(std::is_copy_constructible_v<wire<Chat>> && std::is_copy_assignable_v<wire<Chat>>);
static_assert(std::is_nothrow_move_constructible_v<wire<Chat>> &&
              std::is_nothrow_move_assignable_v<wire<Chat>>);
static_assert(std::is_nothrow_default_constructible_v<wire<Chat>>);

TEST(wire, copy_keeps_the_content_in_words_of_its_own) {
  auto original = std::make_optional(make_chat("a", unicode, {"x", "y"}));
  wire<Chat> copy = *original;
  EXPECT_EQ(to_vector(copy.bytes()), to_vector(original->bytes()));
  EXPECT_NE(copy.bytes().data(), original->bytes().data());
  original.reset();
  EXPECT_EQ(describe(copy.get()), "a|" + unicode + "|x,y");
}

TEST(wire, copy_assignment_replaces_the_content) {
  auto a = make_chat("a", "1", {});
  auto b = make_chat("b", "2", {"t"});
  a = b;
  EXPECT_EQ(describe(a.get()), "b|2|t");
  EXPECT_EQ(describe(b.get()), "b|2|t");
  a = std::as_const(a);  // self-assignment
  EXPECT_EQ(describe(a.get()), "b|2|t");
}

TEST(wire, move_hands_over_the_words_and_readers_into_them_stay_valid) {
  auto a = make_chat("a", unicode, {"x"});
  Chat::Reader before = a.get();
  const std::byte* words = a.bytes().data();
  wire<Chat> b = std::move(a);
  EXPECT_EQ(b.bytes().data(), words) << "a move copies nothing";
  EXPECT_EQ(describe(before), "a|" + unicode + "|x");
  EXPECT_EQ(describe(a.get()), "||") << "the moved-from wire reads as the default";  // NOLINT
  wire<Chat> c;
  c = std::move(b);
  EXPECT_EQ(describe(c.get()), "a|" + unicode + "|x");
  EXPECT_EQ(describe(before), "a|" + unicode + "|x");
}

// Bytes -------------------------------------------------------------------------

TEST(wire, bytes_from_bytes_round_trip_is_exact) {
  auto w = make_chat("ada", unicode, {"1", "2", "3"});
  auto back = wire<Chat>::from_bytes(w.bytes());
  EXPECT_EQ(describe(back.get()), describe(w.get()));
  EXPECT_EQ(to_vector(back.bytes()), to_vector(w.bytes()));
  EXPECT_EQ(w.bytes().size() % 8, 0u);
}

TEST(wire, from_bytes_takes_any_standard_message_even_with_several_segments) {
  // Tiny fixed-size segments: the text and list land in other segments,
  // reached through far pointers.
  capnp::MallocMessageBuilder source(4, capnp::AllocationStrategy::FIXED_SIZE);
  auto c = source.initRoot<Chat>();
  c.setFrom("far");
  c.setBody(unicode);
  auto tags = c.initTags(3);
  for (unsigned i = 0; i < 3; ++i) tags.set(i, "tag" + std::to_string(i));
  ASSERT_GT(source.getSegmentsForOutput().size(), 1u);
  auto flat = capnp::messageToFlatArray(source);
  auto w = wire<Chat>::from_bytes(std::as_bytes(std::span(flat.begin(), flat.size())));
  EXPECT_EQ(describe(w.get()), "far|" + unicode + "|tag0,tag1,tag2");
  std::uint32_t segments_minus_one;
  std::memcpy(&segments_minus_one, w.bytes().data(), 4);
  EXPECT_EQ(segments_minus_one, 0u) << "stored as one segment";
}

TEST(wire, from_bytes_takes_unaligned_input) {
  auto w = make_chat("u", unicode, {"t"});
  bytes_t shifted(w.bytes().size() + 1);
  std::memcpy(shifted.data() + 1, w.bytes().data(), w.bytes().size());
  auto back = wire<Chat>::from_bytes(std::span(shifted).subspan(1));
  EXPECT_EQ(describe(back.get()), "u|" + unicode + "|t");
}

TEST(wire, from_bytes_takes_a_null_root_as_the_default_struct) {
  auto w = wire<Ping>::from_bytes(one_segment({0}));
  EXPECT_EQ(w.get().getSeq(), 0u);
}

// Malformed input: each refused with errc::bad_message and the reason.

void expect_refused(const bytes_t& input, const std::string& reason) {
  auto [code, what] = error_of([&] { (void)wire<Chat>::from_bytes(input); });
  EXPECT_EQ(code, errc::bad_message) << what;
  EXPECT_NE(what.find(reason), std::string::npos)
      << "'" << what << "' does not say '" << reason << "'";
  EXPECT_NE(what.find("test_messages.capnp:Chat"), std::string::npos) << what << " names the type";
}

TEST(wire, from_bytes_refuses_empty_input) { expect_refused({}, "the input is empty"); }

TEST(wire, from_bytes_refuses_a_length_that_is_not_whole_words) {
  auto w = make_chat("a", "b", {});
  bytes_t odd = to_vector(w.bytes());
  odd.resize(13);
  expect_refused(odd, "13 bytes is not a whole number of 8-byte words");
  odd = to_vector(w.bytes());
  odd.push_back(std::byte{0});
  expect_refused(odd, "not a whole number of 8-byte words");
}

TEST(wire, from_bytes_refuses_a_truncated_segment_table) {
  bytes_t b;
  put_u32(b, 0, 2);  // 3 segments: the table takes 2 words; only 1 is there
  put_u32(b, 4, 1);
  expect_refused(b, "the segment table is truncated: "
                    "3 segments need 16 bytes of table, the input has 8");
}

TEST(wire, from_bytes_refuses_too_many_segments) {
  bytes_t b;
  put_u32(b, 0, 999'999);
  put_u32(b, 4, 1);
  expect_refused(b, "declares 1000000 segments (at most 512)");
}

TEST(wire, from_bytes_refuses_segments_larger_than_the_input) {
  bytes_t b = one_segment({struct_ptr(0, 1, 0), 42});
  put_u32(b, 4, 10);  // declares 10 words; 2 follow
  expect_refused(b, "the segments declare 10 words but only 2 follow the segment table");
  bytes_t two;  // two segments, the second one short
  put_u32(two, 0, 1);
  put_u32(two, 4, 1);
  put_u32(two, 8, 5);
  put_u64(two, 16, 0);  // the one word present
  expect_refused(two, "the segments declare 6 words but only 1 follow");
}

TEST(wire, from_bytes_refuses_trailing_bytes) {
  auto w = make_chat("a", "b", {});
  bytes_t b = to_vector(w.bytes());
  b.resize(b.size() + 16);
  expect_refused(b, "16 bytes follow the end of the message");
}

TEST(wire, from_bytes_refuses_an_empty_first_segment) {
  bytes_t b;
  put_u32(b, 0, 0);
  put_u32(b, 4, 0);
  expect_refused(b, "the first segment is empty");
}

TEST(wire, from_bytes_refuses_a_pointer_out_of_bounds) {
  // The root struct starts 100 words past the segment's end.
  expect_refused(one_segment({struct_ptr(100, 1, 0), 0}), "out-of-bounds");
  // A text pointer inside the root struct runs past the end.
  expect_refused(one_segment({struct_ptr(0, 0, 1), list_ptr(0, 2, 1000)}), "out-of-bounds");
}

TEST(wire, from_bytes_refuses_a_far_pointer_to_a_missing_segment) {
  expect_refused(one_segment({far_ptr(5, 0)}), "far pointer to unknown segment");
}

TEST(wire, from_bytes_refuses_a_root_that_is_not_a_struct) {
  expect_refused(one_segment({list_ptr(0, 2, 8), 0}), "the root is a list, not a struct");
}

TEST(wire, from_bytes_refuses_nesting_deeper_than_the_limit) {
  auto deep = wire<Chain>::build([](Chain::Builder c) {
    for (unsigned d = 0; d < 100; ++d) c = c.initNext();
  });
  auto [code, what] = error_of([&] { (void)wire<Chain>::from_bytes(deep.bytes()); });
  EXPECT_EQ(code, errc::bad_message);
  EXPECT_NE(what.find("too deeply-nested"), std::string::npos) << what;
  // 60 levels is within the limit.
  auto shallow = wire<Chain>::build([](Chain::Builder c) {
    for (unsigned d = 0; d < 60; ++d) c = c.initNext();
  });
  EXPECT_NO_THROW((void)wire<Chain>::from_bytes(shallow.bytes()));
}

TEST(wire, from_bytes_refuses_a_pointer_cycle) {
  // The root struct's one pointer points back at the struct itself.
  auto [code, what] = error_of([] {
    (void)wire<Chain>::from_bytes(one_segment({struct_ptr(0, 1, 1), 0, struct_ptr(-2, 1, 1)}));
  });
  EXPECT_EQ(code, errc::bad_message);
  EXPECT_NE(what.find("too deeply-nested"), std::string::npos) << what;
}

TEST(wire, from_bytes_refuses_aliased_pointers_beyond_the_traversal_limit) {
  // 4096 list elements all pointing at one 32 KiB blob: a 64 KiB message
  // that reads as 128 MiB.
  constexpr std::uint32_t n = 4096, blob_words = 4096;
  std::vector<std::uint64_t> words{struct_ptr(0, 0, 1), list_ptr(0, 6, n)};
  for (std::uint32_t i = 0; i < n; ++i)
    words.push_back(list_ptr(std::int32_t(n - i - 1), 2, blob_words * 8));
  words.resize(words.size() + blob_words, 0x0101010101010101ull);
  auto input = one_segment(words);
  auto [code, what] = error_of([&] { (void)wire<Blobs>::from_bytes(input); });
  EXPECT_EQ(code, errc::bad_message);
  EXPECT_NE(what.find("traversal limit"), std::string::npos) << what;
  // The same list with each element pointing at a blob of its own is fine.
  auto honest = wire<Blobs>::build([](Blobs::Builder b) {
    auto items = b.initItems(64);
    for (unsigned i = 0; i < 64; ++i) items.init(i, 8 * 64);
  });
  EXPECT_EQ(wire<Blobs>::from_bytes(honest.bytes()).get().getItems().size(), 64u);
}

// Identity ----------------------------------------------------------------------

static_assert(wire<Ping>::schema_id() == capnp::typeId<Ping>());
static_assert(wire<Reading::Sensor>::schema_id() == capnp::typeId<Reading::Sensor>());

TEST(wire, schema_id_is_the_capnp_type_id_and_type_name_its_display_name) {
  EXPECT_EQ(wire<Chat>::schema_id(), capnp::typeId<Chat>());
  EXPECT_NE(wire<Chat>::schema_id(), wire<Ping>::schema_id());
  EXPECT_EQ(wire<Chat>::type_name(), "schemas/test_messages.capnp:Chat");
  EXPECT_EQ(wire<Reading::Sensor>::type_name(), "schemas/test_messages.capnp:Reading.Sensor");
}

// The codec registry ------------------------------------------------------------

TEST(wire_codec, every_wire_type_used_is_registered_before_main) {
  const dd::wire_codec* c = dd::codec_by_key(ember::detail::key_of<wire<Ping>>());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->schema_id, wire<Ping>::schema_id());
  EXPECT_EQ(c->key, ember::detail::key_of<wire<Ping>>());
  EXPECT_EQ(c->name, "schemas/test_messages.capnp:Ping");
  EXPECT_EQ(dd::codec_by_schema(capnp::typeId<Ping>()), c);
  EXPECT_NE(dd::codec_by_key(ember::detail::key_of<wire<Chat>>()), c);
}

TEST(wire_codec, unknown_key_or_schema_has_no_codec) {
  EXPECT_EQ(dd::codec_by_key(ember::detail::key_of<int>()), nullptr);
  EXPECT_EQ(dd::codec_by_key(ember::detail::key_of<std::string>()), nullptr);
  EXPECT_EQ(dd::codec_by_key(ember::detail::key_of<Chat>()), nullptr)
      << "Chat itself is not a wire";
  EXPECT_EQ(dd::codec_by_schema(0x8000000000001234ull), nullptr);
  EXPECT_EQ(dd::codec_by_schema(0), nullptr);
}

TEST(wire_codec, decode_of_the_bytes_of_an_envelope_is_an_equal_message) {
  auto w = make_chat("env", unicode, {"t"});
  std::unique_ptr<ember::detail::envelope, ember::detail::envelope_deleter> sent(
      ember::detail::make_envelope(w));
  const dd::wire_codec* c = dd::codec_by_key(sent->key);
  ASSERT_NE(c, nullptr);
  std::span<const std::byte> b = c->bytes(sent.get());
  EXPECT_EQ(to_vector(b), to_vector(w.bytes()));
  std::unique_ptr<ember::detail::envelope, ember::detail::envelope_deleter> decoded(
      dd::codec_by_schema(c->schema_id)->decode(b));
  ASSERT_NE(decoded, nullptr);
  EXPECT_EQ(decoded->key, ember::detail::key_of<wire<Chat>>());
  EXPECT_NE(decoded->materialize, nullptr) << "in transit, to be copied into its receiver's heap";
  ember::message m(decoded.get());
  ASSERT_TRUE(m.is<wire<Chat>>());
  EXPECT_EQ(describe(m.get<wire<Chat>>().get()), "env|" + unicode + "|t");
}

TEST(wire_codec, decode_refuses_malformed_bytes) {
  const dd::wire_codec* c = dd::codec_by_schema(capnp::typeId<Chat>());
  ASSERT_NE(c, nullptr);
  auto [code, what] = error_of([&] { (void)c->decode(bytes_t(12)); });
  EXPECT_EQ(code, errc::bad_message);
  EXPECT_NE(what.find("not a whole number of 8-byte words"), std::string::npos) << what;
}

TEST(wire_codec, register_wire_types_makes_a_type_known_without_making_one) {
  // Nothing in this program makes a wire<Reading::Sensor>.
  ember::register_wire_types<Reading::Sensor, Ping>();
  const dd::wire_codec* c = dd::codec_by_schema(capnp::typeId<Reading::Sensor>());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->key, ember::detail::key_of<wire<Reading::Sensor>>());
  EXPECT_EQ(c->name, "schemas/test_messages.capnp:Reading.Sensor");
  EXPECT_EQ(dd::codec_by_key(c->key), c);
}

TEST(wire_codec, registering_again_changes_nothing) {
  const dd::wire_codec* before = dd::codec_by_key(ember::detail::key_of<wire<Chat>>());
  ASSERT_NE(before, nullptr);
  for (int i = 0; i < 3; ++i) {
    dd::register_codec(dd::wire_registration<Chat>::codec());
    ember::register_wire_types<Chat>();
  }
  EXPECT_EQ(dd::codec_by_key(ember::detail::key_of<wire<Chat>>()), before);
  EXPECT_EQ(dd::codec_by_schema(capnp::typeId<Chat>()), before);
}

struct alias_tag {};
struct conflict_tag {};

TEST(wire_codec, the_same_schema_under_another_key_is_an_alias) {
  dd::wire_codec alias = dd::wire_registration<Batch>::codec();
  alias.key = ember::detail::key_of<alias_tag>();  // as a second copy of the type tag would be
  dd::register_codec(alias);
  const dd::wire_codec* c = dd::codec_by_key(ember::detail::key_of<alias_tag>());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->schema_id, capnp::typeId<Batch>());
  EXPECT_EQ(dd::codec_by_schema(capnp::typeId<Batch>())->key, ember::detail::key_of<wire<Batch>>())
      << "the schema id still maps to the first registered";
}

TEST(wire_codec, two_schemas_sharing_an_id_are_refused) {
  dd::wire_codec impostor = dd::wire_registration<Ping>::codec();
  impostor.key = ember::detail::key_of<conflict_tag>();
  impostor.name = "other.capnp:Ping";
  auto [code, what] = error_of([&] { dd::register_codec(impostor); });
  EXPECT_EQ(code, errc::invalid_argument);
  EXPECT_NE(what.find("names both schemas/test_messages.capnp:Ping and other.capnp:Ping"),
            std::string::npos)
      << what;
  EXPECT_EQ(dd::codec_by_key(ember::detail::key_of<conflict_tag>()), nullptr);
}

// Synthetic types for the concurrency test: keys are addresses in this array.
constexpr int registering_threads = 8;
constexpr int types_per_thread = 150;
char synthetic_keys[registering_threads * types_per_thread];

TEST(wire_codec, concurrent_registration_and_lookup_are_safe) {
  // Threads register new types (the tables grow several times) while
  // others look up a type registered before: it is never missing.
  const dd::wire_codec* ping = dd::codec_by_key(ember::detail::key_of<wire<Ping>>());
  ASSERT_NE(ping, nullptr);
  std::atomic<bool> done{false};
  std::atomic<int> misses{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!done.load()) {
        if (dd::codec_by_key(ember::detail::key_of<wire<Ping>>()) != ping) misses.fetch_add(1);
        if (dd::codec_by_schema(capnp::typeId<Ping>()) != ping) misses.fetch_add(1);
      }
    });
  }
  std::vector<std::thread> writers;
  for (int t = 0; t < registering_threads; ++t) {
    writers.emplace_back([t] {
      for (int i = 0; i < types_per_thread; ++i) {
        int n = t * types_per_thread + i;
        dd::wire_codec c = dd::wire_registration<Ping>::codec();
        c.schema_id = 0xe000000000000000ull + std::uint64_t(n);
        c.key = &synthetic_keys[n];
        c.name = "synthetic.capnp:T" + std::to_string(n);
        dd::register_codec(c);
        dd::register_codec(c);  // and again, racing with the others
        if (dd::codec_by_key(c.key) == nullptr) ADD_FAILURE() << "lost " << c.name;
      }
    });
  }
  for (auto& w : writers) w.join();
  done.store(true);
  for (auto& r : readers) r.join();
  EXPECT_EQ(misses.load(), 0);
  for (int n = 0; n < registering_threads * types_per_thread; ++n) {
    const dd::wire_codec* c = dd::codec_by_schema(0xe000000000000000ull + std::uint64_t(n));
    ASSERT_NE(c, nullptr) << n;
    EXPECT_EQ(c->key, &synthetic_keys[n]);
    EXPECT_EQ(c->name, "synthetic.capnp:T" + std::to_string(n));
    EXPECT_EQ(dd::codec_by_key(&synthetic_keys[n]), c);
  }
}

// Between processes ---------------------------------------------------------------

class wire_messages : public runtime_test {};

TEST_P(wire_messages, wire_sent_between_processes_survives_the_senders_exit) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    auto [sender, ref] = ember::spawn_monitor([me] {
      ember::send(me, make_chat("sender", unicode, {"one", "two"}));
      ember::send(me, make_chat("ignored", "", {}));
    });
    (void)sender;
    // The sender is gone (its heap reclaimed) before the message is read.
    ember::receive(ember::when([ref = ref](const ember::down& d) { return d.ref == ref; },
                               [](const ember::down&) {}));
    return ember::receive(ember::when(
        [](const wire<Chat>& m) { return text(m.get().getFrom()) == "sender"; },
        [](const wire<Chat>& m) { return describe(m.get()); }));
  });
  EXPECT_EQ(got, "sender|" + unicode + "|one,two");
}

TEST_P(wire_messages, received_wire_lives_in_the_receivers_heap) {
  constexpr std::size_t body_bytes = 256 * 1024;
  auto grew = in_process(rt(), [] {
    pid me = ember::self();
    auto heap = [me] { return ember::process_info(me)->heap_bytes; };
    std::size_t before = heap();
    ember::spawn([me] { ember::send(me, make_chat("big", std::string(body_bytes, 'x'), {})); });
    auto m = ember::receive([](wire<Chat> w) { return w; });
    std::size_t after = heap();
    return m.get().getBody().size() == body_bytes ? after - before : 0;  // 0: content lost
  });
  EXPECT_GE(grew, body_bytes) << "the received message is counted in the receiver's heap";
}

TEST_P(wire_messages, wire_sent_from_outside_arrives_intact) {
  oneshot<std::string> got;
  pid p = rt().spawn([got] {
    got.set(ember::receive([](wire<Chat> m) { return describe(m.get()); }));
  });
  {
    auto m = make_chat("main", unicode, {"x"});
    rt().send(p, m);
  }
  EXPECT_EQ(got.get(), "main|" + unicode + "|x");
}

TEST_P(wire_messages, decoded_envelope_is_delivered_as_a_wire) {
  // What the distribution layer does with bytes from another node.
  auto got = in_process(rt(), [] {
    auto original = make_chat("remote", unicode, {"r"});
    auto* e = dd::codec_by_schema(wire<Chat>::schema_id())->decode(original.bytes());
    ember::detail::send_envelope(nullptr, ember::self(), e);
    return ember::receive([](const wire<Chat>& m) { return describe(m.get()); });
  });
  EXPECT_EQ(got, "remote|" + unicode + "|r");
}

// A handler keeps the first wire it gets, and a reader into it, through many
// messages that allocate and free in its heap.
struct keeper {
  oneshot<std::string> out;
  std::optional<wire<Chat>> kept;
  std::optional<Chat::Reader> reader;
  int seen = 0;
  void operator()(ember::message& m) {
    ember::dispatch(
        m,
        [&](const wire<Chat>& w) {
          if (!kept) {
            kept = w;
            reader = kept->get();
          }
          ++seen;
        },
        [&](const std::string& s) { seen += s.empty() ? 0 : 1; },
        [&](int) {
          out.set(describe(*reader) + " " + describe(kept->get()) + " after " +
                  std::to_string(seen));
          ember::stop();
        });
  }
};

TEST_P(wire_messages, wire_kept_by_a_handler_survives_many_messages) {
  constexpr int n = EMBER_TEST_SANITIZED ? 500 : 3000;
  keeper k;
  auto out = k.out;
  pid p = rt().spawn(ember::handler(std::move(k)));
  rt().send(p, make_chat("first", unicode, {"kept"}));
  auto sender = in_process(rt(), [p] {
    for (int i = 0; i < n; ++i) {
      if (i % 3 == 0) {
        std::string body(std::size_t(i % 200), 'z');
        ember::send(p, make_chat("other" + std::to_string(i), body, {"t"}));
      } else {
        ember::send(p, std::string(std::size_t(1 + i % 300), 's'));
      }
    }
    return n;
  });
  EXPECT_EQ(sender, n);
  rt().send(p, 0);
  std::string kept = "first|" + unicode + "|kept";
  EXPECT_EQ(out.get(), kept + " " + kept + " after " + std::to_string(n + 1));
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(wire_messages);

}  // namespace
