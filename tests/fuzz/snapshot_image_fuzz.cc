// libFuzzer target: a snapshot image arrives from a peer. A corrupt one must
// be refused (and change nothing), never crash the node or half-apply.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "fuzz_seeds.h"
#include "kv/commands.h"
#include "kv/shard.h"
#include "resp/writer.h"
#include "storage/engine.h"
#include "storage/slot.h"

using namespace shoal;

namespace {

struct Store {
  Store() {
    dir = std::filesystem::temp_directory_path() / ("shoal_image_fuzz_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    engine = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 16 << 20}).value());
    shard = std::make_unique<kv::Shard>(engine.get(), 5, 0, storage::kSlotCount);
    SHOAL_CHECK(shard->Load().ok());
  }
  ~Store() {
    shard.reset();
    engine.reset();
    std::filesystem::remove_all(dir);
  }
  std::filesystem::path dir;
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<kv::Shard> shard;
};

Store& TheStore() {
  static Store s;
  return s;
}

}  // namespace

std::vector<std::string> FuzzSeeds() {
  // A real image of a shard holding a few keys (one expiring, two dbs).
  Store& s = TheStore();
  auto batch = s.engine->NewBatch();
  std::string empty(1, '\x01');
  SHOAL_CHECK(s.shard->StageImage(empty, 1, *batch).ok());
  SHOAL_CHECK(s.engine->Write(*batch).ok());
  s.shard->FinishImage();
  // A few keys (one expiring, two databases) written as a replica applies them.
  const std::vector<std::vector<std::string_view>> writes = {
      {"set", "k1", "v1"}, {"set", "k2", "a longer value"}, {"set", "e", "v", "px", "100000"}};
  kv::Limits limits;
  for (uint16_t db : {0, 2}) {
    for (const auto& args : writes) {
      const kv::CommandSpec* spec = nullptr;
      for (const auto& c : kv::DataCommands()) {
        if (c.name == args[0]) spec = &c;
      }
      kv::Entry e;
      e.op = spec->op;
      e.db = db;
      e.now_ms = 1'700'000'000'000;
      std::string out;
      resp::Writer w(&out, 2);
      kv::PrepareContext ctx{db, e.now_ms, &limits};
      SHOAL_CHECK(spec->prepare != nullptr ? spec->prepare(ctx, args, &e, &w) : (e.args.assign(args.begin() + 1, args.end()), true));
      SHOAL_CHECK(s.shard->Apply(e, kv::FindApply(e.op), limits, &w).ok());
    }
  }
  auto image = s.shard->ExportImage();
  SHOAL_CHECK(image.ok());
  return {*image, empty};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Store& s = TheStore();
  std::string_view image(reinterpret_cast<const char*>(data), size);
  uint16_t b = 0, e = 0;
  if (kv::Shard::ImageRange(image, &b, &e)) SHOAL_CHECK(b <= e && e <= storage::kSlotCount);
  const uint64_t before = s.shard->applied_index();
  auto batch = s.engine->NewBatch();
  Status st = s.shard->StageImage(image, before + 1, *batch);
  if (!st.ok()) {
    SHOAL_CHECK(s.shard->applied_index() == before);  // refused: nothing changed
    return 0;
  }
  s.shard->StageApplied(before + 1, *batch);  // as KvStateMachine::StageImport
  SHOAL_CHECK(s.engine->Write(*batch).ok());
  s.shard->FinishImage();
  SHOAL_CHECK(s.shard->applied_index() == before + 1);
  return 0;
}
