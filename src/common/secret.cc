#include "common/secret.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <fstream>
#include <stdexcept>

namespace shoal {

std::string RandomNonce() {
  std::string n(kNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1) {
    // No entropy at all: nothing sensible can go on.
    throw std::runtime_error("RAND_bytes failed: no randomness for the cluster secret's nonces");
  }
  return n;
}

std::string Proof(std::string_view secret, std::string_view role, std::string_view challenge,
                  std::string_view response_nonce) {
  std::string msg;
  msg.reserve(role.size() + 1 + challenge.size() + response_nonce.size());
  msg.append(role);
  msg.push_back('\0');
  msg.append(challenge);
  msg.append(response_nonce);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

namespace {
// A proof over the challenge, the nonce and what it vouches for.
std::string ProofOf(std::string_view secret, std::string_view role, std::string_view challenge, std::string_view nonce,
                    std::string_view what) {
  std::string response(nonce);
  response.push_back('\n');
  response.append(what);
  return Proof(secret, role, challenge, response);
}
}  // namespace

std::string JoinProof(std::string_view secret, std::string_view challenge, std::string_view nonce,
                      std::string_view join_args) {
  return ProofOf(secret, "shoal join v1", challenge, nonce, join_args);
}

std::string JoinReplyProof(std::string_view secret, std::string_view challenge, std::string_view nonce,
                           std::string_view cluster_id_hex) {
  return ProofOf(secret, "shoal join reply v1", challenge, nonce, cluster_id_hex);
}

std::string SessionKey(std::string_view secret, std::string_view challenge, std::string_view nonce) {
  return Proof(secret, "shoal peer session v1", challenge, nonce);
}

FrameMacer::FrameMacer(std::string_view key) {
  static EVP_MAC* const kHmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
  ctx_ = kHmac != nullptr ? EVP_MAC_CTX_new(kHmac) : nullptr;
  if (ctx_ == nullptr ||
      EVP_MAC_init(ctx_, reinterpret_cast<const unsigned char*>(key.data()), key.size(), params) != 1) {
    EVP_MAC_CTX_free(ctx_);
    ctx_ = nullptr;
    throw std::runtime_error("HMAC-SHA256 failed in libcrypto");
  }
}

FrameMacer::~FrameMacer() { EVP_MAC_CTX_free(ctx_); }

FrameMacer& FrameMacer::operator=(FrameMacer&& o) noexcept {
  if (this != &o) {
    EVP_MAC_CTX_free(ctx_);
    ctx_ = o.ctx_;
    o.ctx_ = nullptr;
  }
  return *this;
}

void FrameMacer::Compute(uint64_t seq, std::string_view frame, unsigned char* mac) {
  unsigned char s[8];
  for (int i = 0; i < 8; ++i) s[i] = static_cast<unsigned char>(seq >> (56 - 8 * i));
  size_t len = 0;
  // A null key starts a new message under the key the constructor set.
  const bool ok = ctx_ != nullptr && EVP_MAC_init(ctx_, nullptr, 0, nullptr) == 1 &&
                  EVP_MAC_update(ctx_, s, sizeof s) == 1 &&
                  EVP_MAC_update(ctx_, reinterpret_cast<const unsigned char*>(frame.data()), frame.size()) == 1 &&
                  EVP_MAC_final(ctx_, mac, &len, kProofBytes) == 1 && len == kProofBytes;
  if (!ok) throw std::runtime_error("HMAC-SHA256 failed in libcrypto");
}

void FrameMacer::Append(uint64_t seq, std::string_view frame, std::string* out) {
  unsigned char mac[kProofBytes];
  Compute(seq, frame, mac);
  out->append(reinterpret_cast<const char*>(mac), sizeof mac);
}

bool FrameMacer::Verify(uint64_t seq, std::string_view frame, std::string_view mac) {
  unsigned char want[kProofBytes];
  Compute(seq, frame, want);
  return mac.size() == kProofBytes && CRYPTO_memcmp(mac.data(), want, kProofBytes) == 0;
}

std::string FrameMac(std::string_view key, uint64_t seq, std::string_view frame) {
  std::string out;
  FrameMacer(key).Append(seq, frame, &out);
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool ProofsEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && a.size() == kProofBytes && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Status CheckSecret(std::string_view secret) {
  if (secret.size() < 16) {
    return Status::InvalidArgument("the cluster secret must be at least 16 bytes (e.g. `openssl rand -hex 32`)");
  }
  return Status::Ok();
}

Result<std::string> ReadSecretFile(const std::string& path, std::string* warning) {
  std::ifstream in(path);
  if (!in) return Status::IOError("cannot read the cluster secret file " + path);
  std::string line;
  std::getline(in, line);
  const auto b = line.find_first_not_of(" \t\r\n");
  const auto e = line.find_last_not_of(" \t\r\n");
  std::string secret = b == std::string::npos ? "" : line.substr(b, e - b + 1);
  Status s = CheckSecret(secret);
  if (!s.ok()) return s.WithContext(path);
  struct stat st {};
  if (warning != nullptr && ::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    *warning = "the cluster secret file " + path + " may be read by other users (chmod 600 it)";
  }
  return secret;
}

std::string ToHex(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

bool FromHex(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = val(hex[i]), lo = val(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi << 4 | lo));
  }
  return true;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed");
  }
  return ToHex(std::string_view(reinterpret_cast<const char*>(digest), len));
}

}  // namespace shoal
