// What this machine charges for the operations a replicated, durable write
// is made of, measured apart from shoal: a system call, a read that finds
// nothing, one thread waking another (on the same core and on another), a
// loopback TCP round trip, and a small WAL append with its sync (back to
// back, and after a clock tick has passed). A
// three-node write on one machine pays each of these several times (wake-ups
// between threads and processes, loopback frames, one sync a round on every
// node), so these numbers tell how far that write can go here, and they let
// two machines (this 2-core VM, a 16-core device) be compared on more than
// their core count. Each figure is wall time and CPU time (user + system of
// the whole process) per operation.
//
//   build/release/bench/shoal_machine_costs [--dir DIR] [--rounds N]
//
// --dir: where the sync test writes its 64 MiB file (default: the current
// directory, which should be on the disk shoal's data would use).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

double CpuSeconds() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return s(r.ru_utime) + s(r.ru_stime);
}

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Report(const char* what, int n, double wall, double cpu) {
  std::printf("%-52s %9.2f us wall %9.2f us cpu\n", what, wall / n * 1e6, cpu / n * 1e6);
}

// Runs body(n) and reports its wall and CPU time per operation.
void Measure(const char* what, int n, const std::function<void(int)>& body) {
  const double c0 = CpuSeconds(), w0 = WallSeconds();
  body(n);
  Report(what, n, WallSeconds() - w0, CpuSeconds() - c0);
}

bool Pin(pthread_t t, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(t, sizeof(set), &set) == 0;
}

// Two threads hand a token back and forth through eventfds (a blocking read
// each way): one round trip is two wake-ups, as a worker and its WAL syncer
// pay for each sync. `cpus`: where each thread runs (-1: anywhere).
void WakeRoundTrips(const char* what, int n, int cpu_a, int cpu_b) {
  const int to_b = eventfd(0, 0), to_a = eventfd(0, 0);
  if (to_b < 0 || to_a < 0) return std::perror("eventfd");
  std::thread other([&] {
    if (cpu_b >= 0) Pin(pthread_self(), cpu_b);
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) {
      if (read(to_b, &v, 8) != 8 || write(to_a, &v, 8) != 8) return;
    }
  });
  if (cpu_a >= 0) Pin(pthread_self(), cpu_a);
  usleep(2000);  // the other thread is waiting before the clock starts
  Measure(what, n, [&](int count) {
    uint64_t v = 1;
    for (int i = 0; i < count; ++i) {
      if (write(to_b, &v, 8) != 8 || read(to_a, &v, 8) != 8) return;
    }
  });
  other.join();
  if (cpu_a >= 0) {
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &all);
    pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
  }
  close(to_b);
  close(to_a);
}

// A connected loopback TCP pair (127.0.0.1), or {-1, -1}.
std::pair<int, int> LoopbackPair() {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("listen");
    return {-1, -1};
  }
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("connect");
    return {-1, -1};
  }
  const int server = accept(listener, nullptr, nullptr);
  close(listener);
  const int one = 1;
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return {client, server};
}

// 100-byte requests answered by 5-byte replies between two threads over
// loopback TCP: the shape of a client's SET and its +OK, or of a Raft append
// and its acknowledgement between two nodes on one machine.
void TcpRoundTrips(int n) {
  const std::pair<int, int> pair = LoopbackPair();
  const int client = pair.first, server = pair.second;
  if (client < 0) return;
  std::thread echo([fd = server, n] {
    char buf[256];
    for (int i = 0; i < n; ++i) {
      if (recv(fd, buf, 100, MSG_WAITALL) != 100 || send(fd, "+OK\r\n", 5, 0) != 5) return;
    }
  });
  usleep(2000);
  Measure("loopback TCP round trip (100 B out, 5 B back)", n, [&](int count) {
    char req[100];
    std::memset(req, 'x', sizeof(req));
    char rep[8];
    for (int i = 0; i < count; ++i) {
      if (send(client, req, sizeof(req), 0) != 100 || recv(client, rep, 5, MSG_WAITALL) != 5) return;
    }
  });
  echo.join();
  // A read that finds nothing, as an event loop's speculative read after a reply.
  fcntl(server, F_SETFL, O_NONBLOCK);
  Measure("recv() on an empty socket (EAGAIN)", n * 10, [&](int count) {
    char buf[4096];
    for (int i = 0; i < count; ++i) {
      if (recv(server, buf, sizeof(buf), 0) >= 0) return;
    }
  });
  close(client);
  close(server);
}

// Appends of 1,500 bytes (a round's log entry), each followed by
// fdatasync, to a file written with zeros first (as shoal's WAL is: the
// syncs then commit no metadata).
// A new file of `bytes` zeros at `path`, written and synced; -1 (said why,
// and removed) if that fails.
int OpenZeroedFile(const std::string& path, size_t bytes) {
  const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    return -1;
  }
  std::vector<char> zeros(1 << 20, 0);
  for (size_t at = 0; at < bytes; at += zeros.size()) {
    if (write(fd, zeros.data(), zeros.size()) != static_cast<ssize_t>(zeros.size())) {
      std::perror("write");
      close(fd);
      unlink(path.c_str());
      return -1;
    }
  }
  fsync(fd);
  return fd;
}

void SyncedAppends(const std::string& dir, int n) {
  const std::string path = dir + "/shoal_machine_costs." + std::to_string(getpid());
  constexpr size_t kFile = 64 << 20, kRecord = 1500;
  const int fd = OpenZeroedFile(path, kFile);
  if (fd < 0) return;
  std::vector<char> record(kRecord, 'r');
  const int count = std::min<int>(n, static_cast<int>(kFile / kRecord));
  Measure("1,500-byte append + fdatasync (pre-zeroed file)", count, [&](int k) {
    for (int i = 0; i < k; ++i) {
      if (pwrite(fd, record.data(), kRecord, static_cast<off_t>(i * kRecord)) != static_cast<ssize_t>(kRecord) ||
          fdatasync(fd) != 0) {
        std::perror("append");
        return;
      }
    }
  });
  // Pairs of them after a clock tick has passed: the first write of a pair
  // changes the file's timestamps (a busy WAL's change with every tick),
  // the second, right after, does not. A file system that writes the inode
  // out in fdatasync for a timestamp (ext4 without a journal, Linux 6.x)
  // makes the first sync a second synchronous write. The thread spins
  // through the tick rather than sleeping (an idle CPU makes whatever
  // comes next slower); only the appends and their syncs are timed.
  const int pairs = std::min(count, 300);
  double wall[2] = {0, 0}, cpu[2] = {0, 0};
  bool failed = false;
  for (int i = 0; i < pairs && !failed; ++i) {
    const double spin_until = WallSeconds() + 0.011;  // past a tick at HZ 100 or more
    while (WallSeconds() < spin_until) {
    }
    for (int k = 0; k < 2 && !failed; ++k) {
      const double c0 = CpuSeconds(), w0 = WallSeconds();
      const off_t at = static_cast<off_t>((2 * i + k) * kRecord);
      if (pwrite(fd, record.data(), kRecord, at) != static_cast<ssize_t>(kRecord) || fdatasync(fd) != 0) {
        std::perror("append");
        failed = true;
      }
      wall[k] += WallSeconds() - w0;
      cpu[k] += CpuSeconds() - c0;
    }
  }
  if (!failed) {
    Report("  the first after a clock tick (timestamps change)", pairs, wall[0], cpu[0]);
    Report("  the next, in the same tick", pairs, wall[1], cpu[1]);
  }
  close(fd);
  unlink(path.c_str());
}

// Three threads, each with a pre-zeroed file of its own, append 1,500
// bytes and fdatasync at the same moment, round after round: three nodes
// on one machine syncing the entries of one write. Its commit waits for the
// second of the three syncs (a majority), a client of a lone write for the
// same plus the hops between. Reports the median time from the round's
// start to the first, second and third sync's return. Run with one thread
// first, for the same wake-up and a sync of its own: what a disk of each
// node's own would give.
void ConcurrentSyncs(const std::string& dir, int n, int threads_n) {
  constexpr int kMaxThreads = 3;
  const int kThreads = std::min(threads_n, kMaxThreads);
  constexpr size_t kFile = 16 << 20, kRecord = 1500;
  const int count = std::min<int>(n, static_cast<int>(kFile / kRecord));
  std::vector<int> fds;
  std::vector<std::string> paths;
  bool ok = true;
  for (int t = 0; t < kThreads && ok; ++t) {
    const std::string path = dir + "/shoal_machine_costs." + std::to_string(getpid()) + "." + std::to_string(t);
    const int fd = OpenZeroedFile(path, kFile);
    ok = fd >= 0;
    if (!ok) break;
    fds.push_back(fd);
    paths.push_back(path);
  }
  // done[i][t]: when thread t's sync of round i returned, from the round's start.
  std::vector<std::array<double, kMaxThreads>> done(static_cast<size_t>(count));
  std::vector<double> start(static_cast<size_t>(count));
  std::atomic<bool> failed{!ok};
  std::barrier sync_point(kThreads + 1);
  std::vector<std::thread> threads;
  std::vector<char> record(kRecord, 'r');
  for (int t = 0; t < kThreads && ok; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < count; ++i) {
        sync_point.arrive_and_wait();  // the round starts
        if (!failed.load()) {
          const off_t at = static_cast<off_t>(static_cast<size_t>(i) * kRecord);
          if (pwrite(fds[static_cast<size_t>(t)], record.data(), kRecord, at) != static_cast<ssize_t>(kRecord) ||
              fdatasync(fds[static_cast<size_t>(t)]) != 0) {
            std::perror("append");
            failed.store(true);
          }
        }
        done[static_cast<size_t>(i)][static_cast<size_t>(t)] = WallSeconds();
        sync_point.arrive_and_wait();  // the round ends
      }
    });
  }
  const double c0 = CpuSeconds(), w0 = WallSeconds();
  for (int i = 0; i < count && ok; ++i) {
    start[static_cast<size_t>(i)] = WallSeconds();
    sync_point.arrive_and_wait();
    sync_point.arrive_and_wait();
  }
  const double wall = WallSeconds() - w0, cpu = CpuSeconds() - c0;
  for (auto& th : threads) th.join();
  for (const int fd : fds) close(fd);
  for (const auto& path : paths) unlink(path.c_str());
  if (failed.load() || count == 0) return;
  char title[80];
  std::snprintf(title, sizeof(title), "%d thread%s, each append + fdatasync its own file", kThreads,
                kThreads == 1 ? " (woken for each)" : "s at once");
  Report(title, count * kThreads, wall, cpu);
  const char* names[kMaxThreads] = {"  median to the first sync's return", "  median to the second (a majority of three)",
                                 "  median to the third"};
  for (int k = 0; k < kThreads; ++k) {
    std::vector<double> at;
    at.reserve(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      auto d = done[static_cast<size_t>(i)];
      std::sort(d.begin(), d.begin() + kThreads);
      at.push_back(d[static_cast<size_t>(k)] - start[static_cast<size_t>(i)]);
    }
    std::nth_element(at.begin(), at.begin() + static_cast<ptrdiff_t>(at.size() / 2), at.end());
    std::printf("%-52s %9.2f us wall\n", names[k], at[at.size() / 2] * 1e6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = ".";
  int rounds = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::max(100, std::atoi(argv[i + 1]));
  }
  const int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%d CPUs online; %d rounds a test (syncs: %d)\n", cpus, rounds, rounds / 10);
  Measure("system call (getppid)", rounds * 10, [](int count) {
    for (int i = 0; i < count; ++i) (void)getppid();
  });
  WakeRoundTrips("thread wake round trip, anywhere", rounds, -1, -1);
  WakeRoundTrips("thread wake round trip, one CPU for both", rounds, 0, 0);
  if (cpus > 1) WakeRoundTrips("thread wake round trip, CPU 0 and CPU 1", rounds, 0, 1);
  TcpRoundTrips(rounds);
  SyncedAppends(dir, rounds / 10);
  ConcurrentSyncs(dir, rounds / 10, 1);
  ConcurrentSyncs(dir, rounds / 10, 3);
  return 0;
}
