#include "cli/demo.h"

#include "common/secret.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

extern char** environ;

namespace shoal::cli {
namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

// Sends one inline command and returns what arrives within a short time
// ("" if the node does not answer).
std::string Query(const std::string& host, int port, const std::string& command) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{0, 300000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string req = command + "\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) {
        out.append(buf, static_cast<size_t>(n));
        if (out.find("shoal_node_id") != std::string::npos) break;
      }
    }
  }
  close(fd);
  return out;
}

std::string Field(const std::string& info, const std::string& key) {
  auto pos = info.find(key + ":");
  if (pos == std::string::npos) return "";
  auto end = info.find('\r', pos);
  return info.substr(pos + key.size() + 1, end - pos - key.size() - 1);
}

}  // namespace

int RunDemo(const DemoOptions& opts, const std::string& self_exe) {
  if (opts.port <= 0 || opts.port + opts.nodes - 1 + 10000 > 65535) {
    std::cerr << "shoal demo: --port must leave room for the peer ports (port + 10000)\n";
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(opts.dir, ec);
  if (ec) {
    std::cerr << "shoal demo: cannot create " << opts.dir << ": " << ec.message() << "\n";
    return 1;
  }
  // The nodes prove a cluster secret to each other, as a real deployment's
  // should: one made here on first use, kept beside their data.
  const std::string secret_file = std::filesystem::absolute(std::filesystem::path(opts.dir) / "cluster.secret").string();
  if (!std::filesystem::exists(secret_file)) {
    std::ofstream out(secret_file);
    out << shoal::ToHex(shoal::RandomNonce()) << "\n";
    if (!out) {
      std::cerr << "shoal demo: cannot write " << secret_file << "\n";
      return 1;
    }
  }
  std::filesystem::permissions(secret_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                               ec);
  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::vector<pid_t> pids;
  std::string seed = opts.bind + ":" + std::to_string(opts.port);
  for (int i = 0; i < opts.nodes; ++i) {
    int port = opts.port + i;
    std::string dir = (std::filesystem::path(opts.dir) / ("node" + std::to_string(i + 1))).string();
    std::string log = dir + ".log";
    std::vector<std::string> args = {self_exe, "server", "--bind", opts.bind, "--port", std::to_string(port),
                                     "--peer-port", std::to_string(port + 10000), "--dir", dir,
                                     "--cluster-secret-file", secret_file};
    // Every node but the first joins through the first (restarts too: the
    // same command line brings a node back with its data).
    if (i > 0) {
      args.push_back("--join");
      args.push_back(seed);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, self_exe.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      std::cerr << "shoal demo: cannot start node " << i + 1 << ": " << std::strerror(rc) << "\n";
      g_stop = 1;
      break;
    }
    pids.push_back(pid);
    std::string command;
    for (const auto& arg : args) command += (command.empty() ? "" : " ") + arg;
    std::cout << "node " << i + 1 << ": " << opts.bind << ":" << port << " (pid " << pid << ", log " << log
              << ")\n  to restart it after a kill: " << command << " >> " << log << " 2>&1 &\n";
  }
  // Wait (bounded) until every shard is replicated on every node.
  bool ready = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!g_stop && !ready && std::chrono::steady_clock::now() < deadline) {
    ready = true;
    for (int i = 0; i < opts.nodes && ready; ++i) {
      std::string info = Query(opts.bind, opts.port + i, "CLUSTER INFO");
      ready = Field(info, "cluster_state") == "ok" && !Field(info, "shoal_shards").empty() &&
              Field(info, "shoal_shards") == Field(info, "shoal_shards_replicated") &&
              Field(info, "cluster_known_nodes") == std::to_string(opts.nodes);
    }
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (!g_stop) {
    if (ready) {
      std::cout << "\nshoal demo: a " << opts.nodes << "-node cluster is up (data under " << opts.dir << ").\n"
                << "  redis-cli -c -h " << opts.bind << " -p " << opts.port << "      (cluster-aware)\n"
                << "  redis-cli -h " << opts.bind << " -p " << opts.port + 1
                << "         (any node answers every key)\n"
                << "  redis-cli -h " << opts.bind << " -p " << opts.port << " cluster shards\n"
                << "Kill a node (kill -9 <pid>): writes resume within about a second; restart it\n"
                << "with the command printed above and it catches up.\n"
                << "Ctrl-C stops all nodes.\n"
                << std::flush;
    } else {
      std::cout << "shoal demo: the cluster is not ready after 60 s; see the node logs\n" << std::flush;
    }
  }
  while (!g_stop) {
    int status = 0;
    pid_t done = waitpid(-1, &status, WNOHANG);
    if (done > 0) std::cout << "shoal demo: node with pid " << done << " exited (status " << status << ")\n" << std::flush;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::cout << "\nshoal demo: stopping\n" << std::flush;
  for (pid_t pid : pids) kill(pid, SIGTERM);
  auto stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (pid_t pid : pids) {
    while (waitpid(pid, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > stop_deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return 0;
}

}  // namespace shoal::cli
