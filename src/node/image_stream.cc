#include "node/image_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/bytes.h"

namespace shoal::node {
namespace fs = std::filesystem;
namespace {

constexpr size_t kMaxFiles = 16;
constexpr uint64_t kMaxImageBytes = uint64_t{1} << 42;  // 4 TiB

bool SafeName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

Status Errno(const std::string& what) { return Status::IOError(what + ": " + std::strerror(errno)); }

Status SyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return Errno("open " + path);
  int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : Errno("fsync " + path);
}

Status WriteDurably(const std::string& dir, const std::string& name, std::string_view data) {
  std::string tmp = dir + "/" + name + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Errno("create " + tmp);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      Status s = Errno("write " + tmp);
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync " + tmp);
  if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0) return Errno("rename " + tmp);
  return SyncPath(dir, O_RDONLY | O_DIRECTORY);
}

Status ReadAll(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return Errno("open " + path);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out->append(buf, static_cast<size_t>(n));
  ::close(fd);
  return n < 0 ? Errno("read " + path) : Status::Ok();
}

// Files of size zero get no chunk: created before the image is marked whole.
Status CreateEmptyFiles(const std::string& dir, const std::vector<ImageFile>& files) {
  for (const auto& f : files) {
    std::string path = dir + "/" + f.name;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
    if (fd < 0) return Errno("create " + path);
    ::close(fd);
  }
  return Status::Ok();
}

}  // namespace

std::string EncodeManifest(const std::vector<ImageFile>& files) {
  std::string out;
  PutFixed<uint32_t>(&out, static_cast<uint32_t>(files.size()));
  for (const auto& f : files) {
    PutFixed<uint16_t>(&out, static_cast<uint16_t>(f.name.size()));
    out += f.name;
    PutFixed<uint64_t>(&out, f.size);
  }
  return out;
}

bool DecodeManifest(std::string_view raw, std::vector<ImageFile>* files) {
  uint32_t n = 0;
  if (!GetFixed(&raw, &n) || n == 0 || n > kMaxFiles) return false;
  uint64_t total = 0;
  files->clear();
  for (uint32_t i = 0; i < n; ++i) {
    uint16_t len = 0;
    if (!GetFixed(&raw, &len) || raw.size() < len) return false;
    ImageFile f{std::string(raw.substr(0, len)), 0};
    raw.remove_prefix(len);
    if (!GetFixed(&raw, &f.size) || !SafeName(f.name) || f.size > kMaxImageBytes) return false;
    for (const auto& g : *files) {
      if (g.name == f.name) return false;
    }
    total += f.size;
    files->push_back(std::move(f));
  }
  return raw.empty() && total <= kMaxImageBytes;
}

// --- sender

ImageSender::ImageSender(uint64_t group, raft::NodeId from, raft::NodeId to, uint64_t export_id,
                         std::string dir, ImageSenderOptions opts)
    : group_(group), from_(from), to_(to), export_id_(export_id), dir_(std::move(dir)), opts_(opts) {}

Status ImageSender::Open(int64_t now_us) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (!e.is_regular_file()) continue;
    std::string name = e.path().filename().string();
    if (!SafeName(name)) return Status::InvalidArgument("image file name " + name);
    files_.push_back(ImageFile{name, e.file_size()});
  }
  if (ec) return Status::IOError("list " + dir_ + ": " + ec.message());
  if (files_.empty() || files_.size() > kMaxFiles) return Status::InvalidArgument("image folder " + dir_);
  std::sort(files_.begin(), files_.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& f : files_) total_ += f.size;
  manifest_ = EncodeManifest(files_);
  progress_us_ = now_us;
  return Status::Ok();
}

Result<std::optional<SnapshotChunk>> ImageSender::Next(int64_t now_us, bool may_send_data) {
  if (done_ || refused_) return std::optional<SnapshotChunk>();
  SnapshotChunk c;
  c.group = group_;
  c.from = from_;
  c.to = to_;
  c.export_id = export_id_;
  c.total = total_;
  if (offered_ && sent_ > acked_ && now_us - ack_us_ >= opts_.resend_us) {
    offered_ = false;  // silence: ask the receiver where it stands
    offer_us_ = -1;
  }
  if (!offered_) {
    if (offer_us_ >= 0 && now_us - offer_us_ < opts_.resend_us) return std::optional<SnapshotChunk>();
    offer_us_ = now_us;
    c.kind = SnapshotChunk::Kind::kOffer;
    c.data = manifest_;
    return std::optional<SnapshotChunk>(std::move(c));
  }
  uint64_t window = opts_.chunk_bytes * static_cast<uint64_t>(opts_.window);
  if (!may_send_data || sent_ >= total_ || sent_ - acked_ >= window) return std::optional<SnapshotChunk>();
  if (sent_ == acked_) ack_us_ = now_us;  // the wait for an acknowledgement starts
  uint64_t n = std::min(opts_.chunk_bytes, total_ - sent_);
  c.kind = SnapshotChunk::Kind::kData;
  c.offset = sent_;
  c.data.resize(n);
  // Copy from the files the range [sent_, sent_ + n) covers.
  uint64_t file_start = 0, done = 0;
  for (const auto& f : files_) {
    uint64_t lo = std::max(sent_ + done, file_start);
    uint64_t end = file_start + f.size;
    if (done < n && lo < end) {
      uint64_t take = std::min(end - lo, n - done);
      std::string path = dir_ + "/" + f.name;
      int fd = ::open(path.c_str(), O_RDONLY);
      if (fd < 0) return Errno("open " + path);
      uint64_t got = 0;
      while (got < take) {
        ssize_t r = ::pread(fd, c.data.data() + done + got, take - got, static_cast<off_t>(lo - file_start + got));
        if (r <= 0) {
          Status s = r < 0 ? Errno("read " + path) : Status::IOError(path + " is shorter than its manifest");
          ::close(fd);
          return s;
        }
        got += static_cast<uint64_t>(r);
      }
      ::close(fd);
      done += take;
    }
    file_start = end;
  }
  sent_ += n;
  return std::optional<SnapshotChunk>(std::move(c));
}

void ImageSender::OnAck(const SnapshotChunk& ack, int64_t now_us) {
  if (ack.kind != SnapshotChunk::Kind::kAck || ack.group != group_ || ack.from != from_ || ack.to != to_ ||
      ack.export_id != export_id_ || done_) {
    return;
  }
  if (ack.refused) {
    refused_ = true;
    return;
  }
  if (ack.done) {
    done_ = true;
    acked_ = sent_ = total_;
    progress_us_ = now_us;
    return;
  }
  if (ack.offset > total_) return;
  ack_us_ = now_us;
  if (ack.resync) {
    offered_ = false;  // the receiver lost track of it (it restarted)
    offer_us_ = -1;
    return;
  }
  if (!offered_ && offer_us_ >= 0) {
    // The answer to an offer: the receiver's offset is where to go on.
    // Counts as progress: a transfer that waited its turn starts now.
    offered_ = true;
    progress_us_ = now_us;
    acked_ = sent_ = ack.offset;
    return;
  }
  if (ack.offset < acked_) {
    // The receiver lost what it had (its folder was replaced): offer again.
    offered_ = false;
    offer_us_ = -1;
    acked_ = sent_ = 0;
    return;
  }
  if (ack.offset > acked_) {
    acked_ = ack.offset;
    progress_us_ = now_us;
    sent_ = std::max(sent_, acked_);
  } else if (sent_ > acked_) {
    sent_ = acked_;  // a chunk went missing: send again from there
  }
}

// --- receiver

ImageReceiver::ImageReceiver(std::string root, CheckFn check) : root_(std::move(root)), check_(std::move(check)) {}

SnapshotChunk ImageReceiver::Finish(const SnapshotChunk& c, const std::string& dir,
                                    const std::vector<ImageFile>& files, uint64_t total) {
  Status s = CreateEmptyFiles(dir, files);
  if (s.ok() && check_) {
    s = check_(dir);
    if (!s.ok()) {
      // Corrupt on the way (or written wrong): never whole here. Its sender
      // gives up, and the leader sends another image later.
      spdlog::error("group {}: snapshot image from node {:016x} failed its check ({}); deleted", c.group, c.from,
                    s.ToString());
      std::error_code ec;
      fs::remove_all(dir, ec);
      Supersede(Key{c.group, c.from, c.export_id});  // a re-offer of it is refused too
      return Ack(c, 0, false, true);
    }
  }
  if (s.ok()) s = WriteDurably(dir, ".complete", "");
  if (!s.ok()) return Ack(c, 0, false, true);
  return Ack(c, total, true, false);
}

std::string ImageReceiver::DirOf(const Key& k) const {
  return root_ + "/in-" + std::to_string(std::get<0>(k)) + "-" + std::to_string(std::get<1>(k)) + "-" +
         std::to_string(std::get<2>(k));
}

void ImageReceiver::Recover() {
  std::error_code ec;
  fs::create_directories(root_, ec);
  std::vector<fs::path> gone;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    std::string name = e.path().filename().string();
    if (!e.is_directory() || !name.starts_with("in-")) continue;
    std::error_code ec2;
    if (fs::exists(e.path() / ".complete", ec2) || !fs::exists(e.path() / ".manifest", ec2)) {
      gone.push_back(e.path());
    }
  }
  for (const auto& p : gone) fs::remove_all(p, ec);
}

SnapshotChunk ImageReceiver::Ack(const SnapshotChunk& c, uint64_t held, bool done, bool refused) const {
  SnapshotChunk a;
  a.kind = SnapshotChunk::Kind::kAck;
  a.group = c.group;
  a.from = c.from;
  a.to = c.to;
  a.export_id = c.export_id;
  a.offset = held;
  a.total = c.total;
  a.done = done;
  a.refused = refused;
  return a;
}

std::string ImageReceiver::Complete(uint64_t group, raft::NodeId from, uint64_t export_id) const {
  std::string dir = DirOf(Key{group, from, export_id});
  std::error_code ec;
  return fs::exists(dir + "/.complete", ec) ? dir : std::string();
}

void ImageReceiver::Supersede(const Key& k) {
  superseded_.push_back(k);
  if (superseded_.size() > 64) superseded_.pop_front();
}

void ImageReceiver::Discard(uint64_t group) {
  std::string prefix = "in-" + std::to_string(group) + "-";
  std::error_code ec;
  std::vector<fs::path> gone;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    if (e.path().filename().string().starts_with(prefix)) gone.push_back(e.path());
  }
  for (const auto& p : gone) fs::remove_all(p, ec);
  for (auto it = open_.begin(); it != open_.end();) {
    if (std::get<0>(it->first) == group) {
      Supersede(it->first);  // meant for the replica that left
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
}

void ImageReceiver::Discard(uint64_t group, raft::NodeId from, uint64_t export_id) {
  Key key{group, from, export_id};
  std::error_code ec;
  fs::remove_all(DirOf(key), ec);
  open_.erase(key);
  // The replica may take an image before its sender has heard that it all
  // arrived: a sender that asks again is told so, not sent it again.
  consumed_.push_back(key);
  if (consumed_.size() > 64) consumed_.pop_front();
}

void ImageReceiver::Expire(int64_t age_s) {
  std::error_code ec;
  auto now = fs::file_time_type::clock::now();
  std::vector<fs::path> gone;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    if (!e.is_directory() || !e.path().filename().string().starts_with("in-")) continue;
    auto newest = fs::last_write_time(e.path(), ec);
    for (const auto& f : fs::directory_iterator(e.path(), ec)) newest = std::max(newest, fs::last_write_time(f.path(), ec));
    if (now - newest > std::chrono::seconds(age_s)) gone.push_back(e.path());
  }
  for (const auto& p : gone) {
    fs::remove_all(p, ec);
    for (auto it = open_.begin(); it != open_.end();) it = DirOf(it->first) == p.string() ? open_.erase(it) : std::next(it);
  }
}

SnapshotChunk ImageReceiver::Handle(const SnapshotChunk& c, int64_t now_us) {
  Key key{c.group, c.from, c.export_id};
  std::string dir = DirOf(key);
  std::error_code ec;
  if (std::find(superseded_.begin(), superseded_.end(), key) != superseded_.end()) {
    return Ack(c, 0, false, true);  // a newer image of the group came since
  }
  if (std::find(consumed_.begin(), consumed_.end(), key) != consumed_.end()) {
    return Ack(c, c.total, true, false);  // it arrived, and was taken
  }
  if (c.kind == SnapshotChunk::Kind::kOffer) {
    std::vector<ImageFile> files;
    uint64_t total = 0;
    if (!DecodeManifest(c.data, &files)) return Ack(c, 0, false, true);
    for (const auto& f : files) total += f.size;
    if (total != c.total) return Ack(c, 0, false, true);
    if (!Complete(c.group, c.from, c.export_id).empty()) return Ack(c, total, true, false);
    auto it = open_.find(key);
    if (it != open_.end()) {
      it->second.touched_us = now_us;
      return Ack(c, it->second.held, false, false);
    }
    Open o{files, total, 0, now_us};
    std::string have, held;
    if (ReadAll(dir + "/.manifest", &have).ok() && have == c.data) {
      // Resume from the durable offset (.held); bytes past it may be torn.
      if (ReadAll(dir + "/.held", &held).ok() && held.size() == 8) std::memcpy(&o.held, held.data(), 8);
      o.held = std::min(o.held, total);
      uint64_t file_start = 0;
      for (const auto& f : files) {
        std::string path = dir + "/" + f.name;
        uint64_t keep = o.held > file_start ? std::min(o.held - file_start, f.size) : 0;
        uint64_t size = fs::exists(path, ec) ? fs::file_size(path, ec) : 0;
        if (size < keep) {  // shorter than what was acknowledged: start over
          o.held = 0;
          break;
        }
        if (size > keep) fs::resize_file(path, keep, ec);
        file_start += f.size;
      }
    } else {
      // A new image for this group: others still unfinished are obsolete,
      // but those of other senders still making progress, the furthest
      // along first, kKeepOthers at most (a leader that lost leadership
      // since, or restarted, goes on sending; the replica takes whichever
      // image completes first).
      std::vector<std::pair<const Key*, const Open*>> active;
      for (const auto& [k, open] : open_) {
        if (std::get<0>(k) == c.group && std::get<1>(k) != c.from && now_us - open.touched_us <= kKeepActiveUs) {
          active.emplace_back(&k, &open);
        }
      }
      std::sort(active.begin(), active.end(), [](const auto& a, const auto& b) {
        return a.second->held != b.second->held ? a.second->held > b.second->held
                                                : a.second->touched_us > b.second->touched_us;
      });
      if (active.size() > kKeepOthers) active.resize(kKeepOthers);
      std::vector<Key> keep;
      for (const auto& a : active) keep.push_back(*a.first);
      auto kept = [&](const Key& k) { return std::find(keep.begin(), keep.end(), k) != keep.end(); };
      std::string prefix = "in-" + std::to_string(c.group) + "-";
      std::vector<fs::path> gone;
      for (const auto& e : fs::directory_iterator(root_, ec)) {
        std::error_code ec2;
        if (e.path().filename().string().starts_with(prefix) && !fs::exists(e.path() / ".complete", ec2) &&
            std::none_of(keep.begin(), keep.end(), [&](const Key& k) { return e.path().string() == DirOf(k); })) {
          gone.push_back(e.path());
        }
      }
      for (const auto& p : gone) fs::remove_all(p, ec);
      for (auto jt = open_.begin(); jt != open_.end();) {
        if (std::get<0>(jt->first) == c.group && !kept(jt->first)) {
          Supersede(jt->first);
          jt = open_.erase(jt);
        } else {
          ++jt;
        }
      }
      fs::create_directories(dir, ec);
      if (ec || !WriteDurably(dir, ".manifest", c.data).ok()) return Ack(c, 0, false, true);
    }
    if (o.held == o.total) {
      return Finish(c, dir, o.files, o.total);
    }
    uint64_t at = o.held;
    open_[key] = std::move(o);
    return Ack(c, at, false, false);
  }
  if (c.kind != SnapshotChunk::Kind::kData) return Ack(c, 0, false, true);
  auto it = open_.find(key);
  if (it == open_.end()) {
    if (!Complete(c.group, c.from, c.export_id).empty()) return Ack(c, c.total, true, false);
    SnapshotChunk a = Ack(c, 0, false, false);  // unknown here (restarted): offer again
    a.resync = true;
    return a;
  }
  Open& o = it->second;
  o.touched_us = now_us;
  if (c.offset != o.held || c.data.empty()) return Ack(c, o.held, false, false);
  if (c.offset + c.data.size() > o.total || c.data.size() > kMaxChunkBytes) return Ack(c, o.held, false, true);
  Status s = Write(dir, o, c.offset, c.data);
  if (s.ok()) {
    std::string held;
    uint64_t after = o.held + c.data.size();
    held.append(reinterpret_cast<const char*>(&after), 8);
    s = WriteDurably(dir, ".held", held);
  }
  if (!s.ok()) return Ack(c, o.held, false, true);
  o.held += c.data.size();
  bytes_received_ += c.data.size();
  if (o.held < o.total) return Ack(c, o.held, false, false);
  uint64_t total = o.total;
  std::vector<ImageFile> files = std::move(o.files);
  open_.erase(it);
  return Finish(c, dir, files, total);
}

Status ImageReceiver::Write(const std::string& dir, Open& o, uint64_t offset, std::string_view data) {
  uint64_t file_start = 0;
  for (const auto& f : o.files) {
    uint64_t end = file_start + f.size;
    if (!data.empty() && offset < end) {
      uint64_t take = std::min<uint64_t>(end - offset, data.size());
      std::string path = dir + "/" + f.name;
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
      if (fd < 0) return Errno("open " + path);
      uint64_t put = 0;
      while (put < take) {
        ssize_t n = ::pwrite(fd, data.data() + put, take - put, static_cast<off_t>(offset - file_start + put));
        if (n <= 0) {
          Status s = Errno("write " + path);
          ::close(fd);
          return s;
        }
        put += static_cast<uint64_t>(n);
      }
      int rc = ::fdatasync(fd);
      ::close(fd);
      if (rc != 0) return Errno("fsync " + path);
      offset += take;
      data.remove_prefix(take);
    }
    file_start = end;
  }
  return Status::Ok();  // .held is written next, with the folder synced
}

}  // namespace shoal::node
