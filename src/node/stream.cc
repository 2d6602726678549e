#include "node/stream.h"

#include <asio/ssl.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <filesystem>

namespace shoal::node {

using asio::experimental::as_tuple;

class TlsContext {
 public:
  TlsContext() : ctx(asio::ssl::context::tls) {}
  asio::ssl::context ctx;
};

namespace {

// A TLS peer that closes without a close_notify (a process that died, a
// Close() here) reads as the end of the stream, as a plain one does.
asio::error_code Plain(asio::error_code ec) {
  if (ec == asio::ssl::error::stream_truncated) return asio::error::eof;
  return ec;
}

// OpenSSL's reason for the last failure, or `fallback`.
std::string OpenSslReason(const asio::error_code& ec) {
  unsigned long e = ERR_peek_last_error();
  std::string why = e != 0 ? ERR_reason_error_string(e) != nullptr ? ERR_reason_error_string(e) : "" : "";
  ERR_clear_error();
  if (why.empty()) why = ec.message();
  return why;
}

}  // namespace

Result<std::shared_ptr<TlsContext>> MakeTlsContext(const TlsOptions& opts) {
  auto tls = std::make_shared<TlsContext>();
  auto& ctx = tls->ctx;
  asio::error_code ec;
  // TLS 1.2 and 1.3 only, as Redis's default tls-protocols.
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use,
                  ec);
  // Clients that resume a session (TLS 1.3 tickets) while their
  // certificate is checked need a session id context.
  static constexpr unsigned char kSessionContext[] = "shoal";
  SSL_CTX_set_session_id_context(ctx.native_handle(), kSessionContext, sizeof(kSessionContext) - 1);
  // A key with a passphrase fails to load (below) instead of prompting.
  ctx.set_password_callback([](std::size_t, asio::ssl::context::password_purpose) { return std::string(); }, ec);
  auto check_file = [](const std::string& what, const std::string& path) -> Status {
    std::error_code fec;
    if (!std::filesystem::is_regular_file(path, fec)) {
      return Status::InvalidArgument(what + " " + path + ": no such file");
    }
    return Status::Ok();
  };
  if (opts.cert_file.empty() || opts.key_file.empty()) {
    return Status::InvalidArgument("TLS needs tls-cert-file and tls-key-file");
  }
  Status s = check_file("tls-cert-file", opts.cert_file);
  if (!s.ok()) return s;
  ctx.use_certificate_chain_file(opts.cert_file, ec);
  if (ec) return Status::InvalidArgument("tls-cert-file " + opts.cert_file + ": " + OpenSslReason(ec));
  s = check_file("tls-key-file", opts.key_file);
  if (!s.ok()) return s;
  ctx.use_private_key_file(opts.key_file, asio::ssl::context::pem, ec);
  if (ec) {
    return Status::InvalidArgument("tls-key-file " + opts.key_file + ": " + OpenSslReason(ec) +
                                   " (a key with a passphrase cannot be used)");
  }
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument("tls-key-file " + opts.key_file + " is not the key of tls-cert-file " +
                                   opts.cert_file);
  }
  if (!opts.ca_cert_file.empty()) {
    s = check_file("tls-ca-cert-file", opts.ca_cert_file);
    if (!s.ok()) return s;
    ctx.load_verify_file(opts.ca_cert_file, ec);
    if (ec) return Status::InvalidArgument("tls-ca-cert-file " + opts.ca_cert_file + ": " + OpenSslReason(ec));
  }
  if (!opts.ca_cert_dir.empty()) {
    std::error_code fec;
    if (!std::filesystem::is_directory(opts.ca_cert_dir, fec)) {
      return Status::InvalidArgument("tls-ca-cert-dir " + opts.ca_cert_dir + ": no such directory");
    }
    ctx.add_verify_path(opts.ca_cert_dir, ec);
    if (ec) return Status::InvalidArgument("tls-ca-cert-dir " + opts.ca_cert_dir + ": " + OpenSslReason(ec));
  }
  return tls;
}

struct Stream::Tls {
  Tls(asio::ip::tcp::socket& socket, asio::ssl::context& ctx) : stream(socket, ctx) {}
  asio::ssl::stream<asio::ip::tcp::socket&> stream;
};

Stream::Stream(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> tls)
    : socket_(std::move(socket)), ctx_(std::move(tls)) {
  if (ctx_) tls_ = std::make_unique<Tls>(socket_, ctx_->ctx);
}

Stream::~Stream() = default;

void Stream::Reset(asio::ip::tcp::socket socket) {
  tls_.reset();
  socket_ = std::move(socket);
  if (ctx_) tls_ = std::make_unique<Tls>(socket_, ctx_->ctx);
}

asio::awaitable<asio::error_code> Stream::Handshake(bool accepting, Verify verify) {
  if (!tls_) co_return asio::error_code();
  asio::error_code ec;
  if (accepting) {
    int mode = verify == Verify::kNone       ? asio::ssl::verify_none
               : verify == Verify::kOptional ? asio::ssl::verify_peer
                                             : asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert;
    tls_->stream.set_verify_mode(mode, ec);
  } else {
    tls_->stream.set_verify_mode(asio::ssl::verify_peer, ec);
  }
  auto [hec] = co_await tls_->stream.async_handshake(
      accepting ? asio::ssl::stream_base::server : asio::ssl::stream_base::client, as_tuple(asio::use_awaitable));
  ERR_clear_error();
  co_return Plain(hec);
}

bool Stream::peer_certified() const {
  if (!tls_) return false;
  SSL* ssl = const_cast<Tls&>(*tls_).stream.native_handle();
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return false;
  X509_free(cert);
  return SSL_get_verify_result(ssl) == X509_V_OK;
}

asio::awaitable<Stream::Done> Stream::TlsReadSome(asio::mutable_buffer b) {
  auto [ec, n] = co_await tls_->stream.async_read_some(b, as_tuple(asio::use_awaitable));
  co_return Done{Plain(ec), n};
}

asio::awaitable<Stream::Done> Stream::TlsRead(asio::mutable_buffer b) {
  auto [ec, n] = co_await asio::async_read(tls_->stream, b, as_tuple(asio::use_awaitable));
  co_return Done{Plain(ec), n};
}

asio::awaitable<Stream::Done> Stream::TlsWrite(asio::const_buffer b) {
  co_return co_await asio::async_write(tls_->stream, b, as_tuple(asio::use_awaitable));
}

asio::awaitable<bool> Stream::ReadLine(std::string* pending, std::string* line) {
  constexpr size_t kLineMax = 64 * 1024;
  for (;;) {
    const size_t end = pending->find("\r\n");
    if (end != std::string::npos) {
      line->assign(*pending, 0, end);
      pending->erase(0, end + 2);
      co_return true;
    }
    if (pending->size() > kLineMax) co_return false;
    char chunk[4096];
    auto [ec, n] = co_await ReadSome(asio::buffer(chunk));
    if (ec) co_return false;
    pending->append(chunk, n);
  }
}

size_t Stream::ReadNow(asio::mutable_buffer b, asio::error_code& ec) {
  ec.clear();
  // Non-blocking: a TLS record only partly here leaves its bytes with
  // OpenSSL and says "not yet" (the rest comes with the next call).
  socket_.non_blocking(true, ec);
  if (ec) return 0;
  size_t n = tls_ ? tls_->stream.read_some(b, ec) : socket_.read_some(b, ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    ec.clear();
    return n;
  }
  if (tls_ && ec) {
    ERR_clear_error();
    ec = Plain(ec);
  }
  return n;
}

void Stream::Close() {
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

}  // namespace shoal::node
