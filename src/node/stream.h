// Stream: one TCP connection, in plain text or in TLS (OpenSSL through
// Asio). Client connections, the forwarder's and join's links to other
// nodes, and the peer transport all read and write through it, so each
// speaks TLS the same way. The plain path costs nothing extra: its calls are
// the socket's own. OpenSSL's headers stay in stream.cc.
//
// Single-threaded like the socket below it: use it on its executor.
// Deadlines (node::Deadline) work on socket(): cancelling the socket cuts
// any TLS operation short too.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <functional>
#include <memory>
#include <string>
#include <tuple>

#include "common/status.h"

namespace shoal::node {

// Certificates and keys (PEM files, as Redis names them). The same context
// serves both ends: a node's certificate is shown to clients, to peers it
// accepts, and to nodes it dials; the CA verifies whichever side must prove
// itself.
struct TlsOptions {
  std::string cert_file{};     // the certificate chain this node shows
  std::string key_file{};      // its private key
  std::string ca_cert_file{};  // CA certificates that sign the certificates it trusts
  std::string ca_cert_dir{};   // ... or a directory of them (c_rehash layout)
};

class TlsContext;

// Loads the files; an error names the file and OpenSSL's reason (missing,
// unreadable, a key that does not match the certificate).
Result<std::shared_ptr<TlsContext>> MakeTlsContext(const TlsOptions& opts);

// Whether the other side must show a certificate signed by the CA.
enum class Verify { kNone, kOptional, kRequire };

class Stream {
 public:
  using Done = std::tuple<asio::error_code, size_t>;

  // Plain text when tls is null; otherwise TLS once Handshake() succeeds.
  explicit Stream(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> tls = nullptr);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Starts over on another connection (a redial), with the same context.
  void Reset(asio::ip::tcp::socket socket);

  bool tls() const { return tls_ != nullptr; }
  asio::ip::tcp::socket& socket() { return socket_; }
  const asio::ip::tcp::socket& socket() const { return socket_; }

  // TLS: the handshake as the accepting side (`verify`: whether the other
  // side must show a certificate) or the dialing side (the other side's
  // certificate is always verified against the CA). Plain: succeeds at once.
  // The error's message() is OpenSSL's reason, for logs.
  asio::awaitable<asio::error_code> Handshake(bool accepting, Verify verify = Verify::kRequire);

  // TLS: whether the other side showed a certificate the CA signed (after
  // Handshake()).
  bool peer_certified() const;

  // What arrived (at least a byte), exactly b.size() bytes, and all of b.
  asio::awaitable<Done> ReadSome(asio::mutable_buffer b) {
    if (!tls_) return socket_.async_read_some(b, asio::experimental::as_tuple(asio::use_awaitable));
    return TlsReadSome(b);
  }
  asio::awaitable<Done> Read(asio::mutable_buffer b) {
    if (!tls_) return asio::async_read(socket_, b, asio::experimental::as_tuple(asio::use_awaitable));
    return TlsRead(b);
  }
  asio::awaitable<Done> Write(asio::const_buffer b) {
    if (!tls_) return asio::async_write(socket_, b, asio::experimental::as_tuple(asio::use_awaitable));
    return TlsWrite(b);
  }

  // One line ending in CRLF (returned without it) of a RESP reply, for the
  // simple exchanges between nodes (joins); `pending` keeps what was read
  // past it. False if the connection fails or a line passes 64 KiB.
  asio::awaitable<bool> ReadLine(std::string* pending, std::string* line);

  // Without waiting: what has arrived already (0 if nothing yet, with no
  // error); asio::error::eof (or a TLS error) once the other side is gone.
  // For a client watched while a command waits (socket().async_wait tells
  // when to call it).
  size_t ReadNow(asio::mutable_buffer b, asio::error_code& ec);

  // Closes the connection at once (TLS: without a close_notify).
  void Close();

 private:
  struct Tls;
  asio::awaitable<Done> TlsReadSome(asio::mutable_buffer b);
  asio::awaitable<Done> TlsRead(asio::mutable_buffer b);
  asio::awaitable<Done> TlsWrite(asio::const_buffer b);

  asio::ip::tcp::socket socket_;
  std::shared_ptr<TlsContext> ctx_;
  std::unique_ptr<Tls> tls_;
};

}  // namespace shoal::node
