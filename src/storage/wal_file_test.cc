#include "storage/wal_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include "common/crc32c.h"
#include "storage/engine.h"

namespace shoal::storage {
namespace {

namespace fs = std::filesystem;

// One record of RocksDB's log format, as its writer lays it out.
std::string Record(uint8_t type, std::string_view payload) {
  std::string type_and_payload(1, static_cast<char>(type));
  type_and_payload.append(payload);
  const uint32_t crc = Crc32c(type_and_payload);
  const uint32_t masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
  std::string r;
  for (int i = 0; i < 4; ++i) r.push_back(static_cast<char>(masked >> (8 * i)));
  r.push_back(static_cast<char>(payload.size() & 0xff));
  r.push_back(static_cast<char>(payload.size() >> 8));
  r.append(type_and_payload);
  return r;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const fs::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

using Stop = WalBlockScan::Stop;

void ExpectScan(std::string_view block, size_t intact, Stop stop, const std::string& what) {
  const WalBlockScan scan = ScanWalBlock(block);
  EXPECT_EQ(scan.intact, intact) << what;
  EXPECT_EQ(scan.stop, stop) << what;
}

TEST(WalFile, ScanOfABlock) {
  const std::string a = Record(1, "first write");
  const std::string b = Record(1, std::string(300, 'b'));
  ExpectScan("", 0, Stop::kNone, "empty");
  ExpectScan(a + b, a.size() + b.size(), Stop::kNone, "two records");
  // Where a header fits, one of length 0 and type 0 is what RocksDB skips.
  ExpectScan(a + b + std::string(4096, '\0'), a.size() + b.size(), Stop::kZeros, "zeros after");
  ExpectScan(a + std::string(4, 'c') + std::string(3, '\0') + b, a.size(), Stop::kZeros, "a zero header, checksum set");
  // Under a header's size left: padding, whatever it holds.
  ExpectScan(a + std::string(6, '\0'), a.size() + 6, Stop::kNone, "padding");
  ExpectScan(a + std::string(6, 'x'), a.size() + 6, Stop::kNone, "padding of other bytes");
  // A changed byte in the checksum, the length, the type or the payload.
  for (size_t at : {a.size() + 3, a.size() + 4, a.size() + 6, a.size() + 7, a.size() + 100}) {
    std::string bad = a + b;
    bad[at] ^= 0x10;
    ExpectScan(bad, a.size(), Stop::kDamaged, "byte " + std::to_string(at) + " changed");
  }
  // A type of 0 with a length is no zeros RocksDB skips: it fails the checksum.
  std::string typed = a + b;
  typed[a.size() + 6] = 0;
  ExpectScan(typed, a.size(), Stop::kDamaged, "type 0 with a length");
  ExpectScan(a + b.substr(0, b.size() - 1), a.size(), Stop::kDamaged, "cut short");
  // A record may fill its block exactly, and may be empty.
  const std::string full = Record(1, std::string(kWalBlockBytes - 7, 'f'));
  ASSERT_EQ(full.size(), kWalBlockBytes);
  ExpectScan(full, kWalBlockBytes, Stop::kNone, "a full block");
  ExpectScan(Record(2, "") + a, 7 + a.size(), Stop::kNone, "an empty first fragment");
}

class WalFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("shoal_wal_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<Engine> Open(const fs::path& dir, std::vector<std::string>* notes = nullptr) {
    EngineOptions o{.dir = dir.string(), .memory_budget_bytes = 64 << 20};
    if (notes != nullptr) o.note = [notes](const std::string& line) { notes->push_back(line); };
    auto r = Engine::Open(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  static void Put(Engine& e, const std::string& key, const std::string& value) {
    auto batch = e.NewBatch();
    batch->Put(Cf::kMeta, key, value);
    ASSERT_TRUE(e.Write(*batch).ok());
  }
  static bool Has(Engine& e, const std::string& key, std::string* value = nullptr) {
    std::string v;
    bool ok = e.Get(Cf::kMeta, key, &v).ok();
    if (value != nullptr) *value = v;
    return ok;
  }
  // A copy of `dir` as a crash would leave it: what the files hold now,
  // RocksDB still running.
  fs::path CrashCopy(const fs::path& dir, const std::string& name) {
    fs::path to = root_ / name;
    fs::copy(dir, to, fs::copy_options::recursive);
    fs::remove(to / "LOCK");
    return to;
  }
  static fs::path OnlyWal(const fs::path& dir) {
    fs::path wal;
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".log") {
        wal = e.path();
        ++n;
      }
    }
    EXPECT_EQ(n, 1) << dir;
    return wal;
  }
  // Whole, intact records at the start of a WAL's bytes.
  static uint64_t Intact(std::string_view bytes) {
    uint64_t at = 0;
    while (at < bytes.size()) {
      std::string_view block = bytes.substr(at, kWalBlockBytes);
      const WalBlockScan scan = ScanWalBlock(block);
      at += scan.intact;
      if (scan.stop != Stop::kNone) break;
    }
    return at;
  }

  fs::path root_;
};

TEST_F(WalFileTest, ZerosAheadOfTheLogAreReadAsItsEnd) {
  const fs::path dir = root_ / "db";
  auto e = Open(dir);
  ASSERT_NE(e, nullptr);
  for (int i = 0; i < 200; ++i) {
    Put(*e, "key" + std::to_string(i), std::string(1000, static_cast<char>('a' + i % 26)));
    if (i % 10 == 0) {
      ASSERT_TRUE(e->Sync().ok());
    }
  }
  ASSERT_TRUE(e->Sync().ok());
  // While it runs, the WAL holds its records, then zeros well past them.
  const std::string bytes = ReadFile(OnlyWal(dir));
  const uint64_t end = Intact(bytes);
  EXPECT_GT(end, 200u * 1000);
  EXPECT_GE(bytes.size(), end + kWalZeroAhead / 2);
  EXPECT_TRUE(std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(end), bytes.end(), [](char c) { return c == 0; }));

  // A crash here: every write is found again; the zeros after the log's
  // end are no gap, and are left to RocksDB's reader.
  const fs::path crashed = CrashCopy(dir, "crashed");
  std::vector<std::string> notes;
  {
    auto c = Open(crashed, &notes);
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < 200; ++i) {
      std::string v;
      ASSERT_TRUE(Has(*c, "key" + std::to_string(i), &v)) << i;
      EXPECT_EQ(v, std::string(1000, static_cast<char>('a' + i % 26)));
    }
  }
  EXPECT_TRUE(notes.empty()) << notes[0];

  // Closed and opened again, nothing to cut.
  e.reset();
  notes.clear();
  auto again = Open(dir, &notes);
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(notes.empty());
  EXPECT_TRUE(Has(*again, "key199"));
}

// A WAL file closed is cut to what was appended, whatever the file
// underneath does at its close (RocksDB's cuts only what it preallocated
// itself); any other file is written as it is.
TEST_F(WalFileTest, AClosedWalEndsAtItsLastAppend) {
  auto env = NewZeroAheadWalEnv();
  const auto& fs = env->GetFileSystem();
  for (const std::string name : {"000042.log", "MANIFEST-000001"}) {
    const std::string path = (root_ / name).string();
    std::unique_ptr<rocksdb::FSWritableFile> f;
    ASSERT_TRUE(fs->NewWritableFile(path, rocksdb::FileOptions(), &f, nullptr).ok());
    std::string written;
    for (int i = 0; i < 300; ++i) {
      const std::string chunk(5000, static_cast<char>('a' + i % 26));
      ASSERT_TRUE(f->Append(chunk, rocksdb::IOOptions(), nullptr).ok());
      written += chunk;
      if (i == 0 && name.ends_with(".log")) {
        EXPECT_GE(fs::file_size(path), written.size() + kWalZeroAhead / 2) << "no zeros ahead";
      }
    }
    ASSERT_TRUE(f->Sync(rocksdb::IOOptions(), nullptr).ok());
    ASSERT_TRUE(f->Close(rocksdb::IOOptions(), nullptr).ok());
    EXPECT_EQ(ReadFile(path), written) << name;
  }
}

// A sync that a crash cut short wrote a later page of the log but not the
// page before it (its disk writes finish in any order): within the file,
// that page reads as the zeros written ahead. RocksDB's reader skips zeros
// to the next 32 KiB block and would replay a write found there, without
// the one lost before it. Opening must cut the log at the gap instead.
TEST_F(WalFileTest, AWriteAfterAGapIsNotReplayed) {
  // The record sizes of this layout, from a first database: its WAL after
  // the first write, and after a second one of a known size.
  const std::string big_key = "big", last_key = "last";
  uint64_t first_end = 0, per_byte_base = 0;
  {
    const fs::path probe = root_ / "probe";
    auto e = Open(probe);
    ASSERT_NE(e, nullptr);
    Put(*e, "first", "synced");
    ASSERT_TRUE(e->Sync().ok());
    first_end = Intact(ReadFile(OnlyWal(probe)));
    Put(*e, big_key, std::string(20000, 'x'));
    ASSERT_TRUE(e->Sync().ok());
    per_byte_base = Intact(ReadFile(OnlyWal(probe))) - first_end - 20000;
  }
  ASSERT_GT(first_end, 0u);
  ASSERT_LT(first_end + per_byte_base, 4096u);
  // A value that ends the second record 3 bytes before the first block's
  // end (padding): the third write starts the second block.
  const uint64_t value_bytes = kWalBlockBytes - 3 - first_end - per_byte_base;

  const fs::path dir = root_ / "db";
  auto e = Open(dir);
  ASSERT_NE(e, nullptr);
  Put(*e, "first", "synced");
  ASSERT_TRUE(e->Sync().ok());
  Put(*e, big_key, std::string(value_bytes, 'x'));
  Put(*e, last_key, "after the gap");
  const fs::path wal = OnlyWal(dir);
  std::string bytes = ReadFile(wal);
  ASSERT_EQ(ScanWalBlock(std::string_view(bytes).substr(0, kWalBlockBytes)).intact, kWalBlockBytes);
  ASSERT_EQ(bytes[kWalBlockBytes + 6], 1) << "the third write is not one whole record at the second block's start";

  // Untouched, a crash copy has all three writes.
  {
    auto c = Open(CrashCopy(dir, "whole"));
    ASSERT_NE(c, nullptr);
    EXPECT_TRUE(Has(*c, "first"));
    EXPECT_TRUE(Has(*c, big_key));
    EXPECT_TRUE(Has(*c, last_key));
  }
  // The first page's last write lost: the second record's start reads as zeros.
  const fs::path torn = CrashCopy(dir, "torn");
  bytes = ReadFile(OnlyWal(torn));
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(first_end), bytes.begin() + 4096, '\0');
  WriteFile(OnlyWal(torn), bytes);
  // RocksDB alone (no trim) replays the third write after the gap: the
  // hazard is real.
  {
    const fs::path plain = CrashCopy(torn, "plain");
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const char* name : {"default", "expiry", "meta", "raft"}) cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    rocksdb::Status st = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), plain.string(), cfs, &handles, &raw);
    ASSERT_TRUE(st.ok()) << st.ToString();
    std::string v;
    EXPECT_TRUE(raw->Get(rocksdb::ReadOptions(), handles[2], "first", &v).ok());
    EXPECT_TRUE(raw->Get(rocksdb::ReadOptions(), handles[2], big_key, &v).IsNotFound());
    EXPECT_TRUE(raw->Get(rocksdb::ReadOptions(), handles[2], last_key, &v).ok())
        << "RocksDB no longer replays past zeros: this test no longer shows the gap";
    for (auto* h : handles) (void)raw->DestroyColumnFamilyHandle(h);
    delete raw;
  }
  std::vector<std::string> notes;
  {
    auto c = Open(torn, &notes);
    ASSERT_NE(c, nullptr);
    EXPECT_TRUE(Has(*c, "first"));
    EXPECT_FALSE(Has(*c, big_key));
    EXPECT_FALSE(Has(*c, last_key)) << "a write after the gap was replayed";
  }
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("cut at " + std::to_string(first_end)), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("zeros before later records"), std::string::npos) << notes[0];
}

// WALs after one cut at a gap held nothing acknowledged (a sync covers the
// WALs in order): they are emptied. WALs that end in zeros, or at a damaged
// record (RocksDB's recovery stops there itself), are left alone.
TEST_F(WalFileTest, LaterWalsAreEmptiedOnlyAfterAGap) {
  const std::string a = Record(1, "a write"), b = Record(1, "another");
  const fs::path dir = root_ / "logs";
  fs::create_directories(dir);
  std::string damaged = a + b + a;
  damaged[a.size() + 9] ^= 1;
  const std::map<std::string, std::string> before = {
      {"000007.log", a + std::string(5000, '\0')},                                 // ends in zeros
      {"000009.log", a + b},                                                       // whole
      {"000012.log", a + std::string(100, '\0') + b + std::string(50, '\0')},      // a gap
      {"000013.log", a + b},
      {"000100.log", a},
      {"LOG", "not a WAL" + std::string(100, '\0') + "x"},
  };
  for (const auto& [name, bytes] : before) WriteFile(dir / name, bytes);

  auto r = TrimWalTails(dir.string());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::map<std::string, std::string> after = before;
  after["000012.log"] = a;
  after["000013.log"] = "";
  after["000100.log"] = "";
  for (const auto& [name, bytes] : after) EXPECT_EQ(ReadFile(dir / name), bytes) << name;
  ASSERT_EQ(r.value().size(), 3u);
  EXPECT_EQ(r.value()[0].rfind("000012.log: cut at " + std::to_string(a.size()), 0), 0u) << r.value()[0];
  EXPECT_EQ(r.value()[1].rfind("000100.log: emptied", 0), 0u) << r.value()[1];
  EXPECT_EQ(r.value()[2].rfind("000013.log: emptied", 0), 0u) << r.value()[2];

  // A second pass has nothing to do; nor has a directory not there yet.
  auto again = TrimWalTails(dir.string());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again.value().empty());
  auto none = TrimWalTails((root_ / "absent").string());
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none.value().empty());

  // A damaged record: RocksDB's recovery stops at it, and that WAL is left
  // as it is, gap or not after it; a later WAL's gap is still cut.
  const std::string damaged_then_gap = damaged + std::string(kWalBlockBytes, '\0') + b;
  WriteFile(dir / "000200.log", damaged_then_gap);
  WriteFile(dir / "000201.log", a + std::string(100, '\0') + b);
  auto left = TrimWalTails(dir.string());
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(ReadFile(dir / "000200.log"), damaged_then_gap);
  EXPECT_EQ(ReadFile(dir / "000201.log"), a);
  ASSERT_EQ(left.value().size(), 1u);
  EXPECT_EQ(left.value()[0].rfind("000201.log: cut at", 0), 0u) << left.value()[0];
}

// The later WALs are emptied before the torn one is cut: when emptying one
// fails (or the process dies meanwhile), the gap is still there to be
// found at the next start, and nothing has been cut.
TEST_F(WalFileTest, ATornWalIsCutOnlyOnceTheLaterOnesAreEmpty) {
  const std::string a = Record(1, "a write"), b = Record(1, "another");
  const fs::path dir = root_ / "logs";
  fs::create_directories(dir);
  const std::string torn = a + std::string(100, '\0') + b;
  WriteFile(dir / "000003.log", torn);
  WriteFile(dir / "000004.log", a);
  fs::create_directories(dir / "000005.log");  // cannot be opened for writing
  auto r = TrimWalTails(dir.string());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(ReadFile(dir / "000003.log"), torn);
  EXPECT_EQ(ReadFile(dir / "000004.log"), a);
  fs::remove(dir / "000005.log");
  r = TrimWalTails(dir.string());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ReadFile(dir / "000003.log"), a);
  EXPECT_EQ(ReadFile(dir / "000004.log"), "");
}

// RocksDB's lock on the directory: WALs of a database that is open stay
// as they are, whatever they look like.
TEST_F(WalFileTest, WalsOfAnOpenDatabaseAreNotCut) {
  const fs::path dir = root_ / "db";
  auto e = Open(dir);
  ASSERT_NE(e, nullptr);
  Put(*e, "k", "v");
  ASSERT_TRUE(e->Sync().ok());
  const fs::path wal = OnlyWal(dir);
  const std::string bytes = ReadFile(wal);
  auto r = TrimWalTails(dir.string());
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("lock"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(ReadFile(wal), bytes);
}

}  // namespace
}  // namespace shoal::storage
