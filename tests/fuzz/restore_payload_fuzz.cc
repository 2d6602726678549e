// Fuzz target: RESTORE's decoding of a serialized value (Redis's RDB object
// encodings: lengths, integer and LZF strings, listpacks, intsets,
// quicklists, binary and text doubles) must refuse bad bytes with an error
// and never crash. The input is tried as a whole payload (checked footer)
// and as an object body that is given a valid footer, so the decoders behind
// the checksum are reached. What decodes must decode again the same way.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_seeds.h"
#include "kv/commands.h"

using namespace shoal;

std::vector<std::string> FuzzSeeds() {
  using namespace std::string_literals;
  return {
      "\x00\x05hello"s,                                   // a string
      "\x00\xc0\x7b"s,                                    // an 8-bit integer string
      "\x00\xc3\x06\x0a\x02" "abc\xe0\x03\x02"s,         // LZF: "abc" + a back reference
      "\x01\x02\x01" "a\x01" "b"s,                       // a list
      "\x02\x02\x01" "x\x01" "y"s,                       // a set
      "\x04\x01\x01" "f\x01" "v"s,                       // a hash
      "\x05\x01\x01m\x00\x00\x00\x00\x00\x00\xf8\x3f"s,  // a sorted set, score 1.5
      "\x0b\x10\x02\x00\x00\x00\x02\x00\x00\x00\x01\x00\x02\x00"s,  // an intset {1, 2}
      "\x10\x0f\x0f\x00\x00\x00\x02\x00\x81" "a\x02\x01\x01\xff"s,    // a listpack hash {a: 1}
      "\x12\x01\x02\x0b\x0b\x00\x00\x00\x01\x00\x81" "z\x02\xff"s,     // a quicklist of one listpack
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kv::CommandSpec* restore = [] {
    for (const kv::CommandSpec& s : kv::DataCommands()) {
      if (s.name == "restore") return &s;
    }
    return static_cast<const kv::CommandSpec*>(nullptr);
  }();
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string sealed = kv::SealDumpPayload(in);
  kv::Limits limits;
  kv::PrepareContext ctx{0, 1'700'000'000'000, &limits};
  for (std::string_view payload : {in, std::string_view(sealed)}) {
    std::vector<std::string_view> args = {"restore", "k", "0", payload, "REPLACE"};
    std::string out;
    resp::Writer w(&out, 2);
    kv::Entry first, second;
    const bool ok = restore->prepare(ctx, args, &first, &w);
    SHOAL_CHECK(ok || out.starts_with("-"));
    if (ok) {
      SHOAL_CHECK(restore->prepare(ctx, args, &second, &w) && second.args == first.args);
      SHOAL_CHECK(first.args.size() >= 4 && first.args[0] == "k");
    }
  }
  return 0;
}
