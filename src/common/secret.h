// The cluster secret: what a node proves, by challenge and response, before
// its peers take its Raft frames or serve its SHOAL.JOIN. The secret itself
// never travels: each side sends a random nonce and an HMAC-SHA256, keyed by
// the secret, over both nonces and its role (docs/OPERATIONS.md, "Security").
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

struct evp_mac_ctx_st;  // OpenSSL's EVP_MAC_CTX

namespace shoal {

constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;

// kNonceBytes from the operating system's CSPRNG.
std::string RandomNonce();

// HMAC-SHA256(secret, role || 0 || challenge || response_nonce): 32 bytes.
std::string Proof(std::string_view secret, std::string_view role, std::string_view challenge,
                  std::string_view response_nonce);

// The proof a joining node sends with SHOAL.JOIN: over the challenge the
// member gave it (SHOAL.CHALLENGE), its own nonce, and the join's arguments
// ("node-id host port peer-port"), so none of them can be changed.
std::string JoinProof(std::string_view secret, std::string_view challenge, std::string_view nonce,
                      std::string_view join_args);

// What a member answers a proved join with, so the joining node knows the
// cluster id it is told comes from a member (a proof over the same
// challenge and nonce, and the id).
std::string JoinReplyProof(std::string_view secret, std::string_view challenge, std::string_view nonce,
                           std::string_view cluster_id_hex);

// The key of one authenticated peer connection, from the secret and the
// handshake's two nonces; every frame on it then carries
// FrameMac(key, its sequence number on the connection, its bytes), so no
// frame can be added, replayed or changed on the way.
std::string SessionKey(std::string_view secret, std::string_view challenge, std::string_view nonce);
std::string FrameMac(std::string_view key, uint64_t seq, std::string_view frame);

// FrameMac with one key over many frames: the keyed HMAC state is set up
// once, so a frame then costs its hash alone (no allocation, no lookup of
// the algorithm). One per connection and direction; not thread-safe.
class FrameMacer {
 public:
  FrameMacer() = default;  // no key: empty(), and nothing to compute
  explicit FrameMacer(std::string_view key);
  ~FrameMacer();
  FrameMacer(FrameMacer&& o) noexcept : ctx_(o.ctx_) { o.ctx_ = nullptr; }
  FrameMacer& operator=(FrameMacer&& o) noexcept;
  FrameMacer(const FrameMacer&) = delete;
  FrameMacer& operator=(const FrameMacer&) = delete;

  bool empty() const { return ctx_ == nullptr; }
  // Appends FrameMac(key, seq, frame), kProofBytes, to *out.
  void Append(uint64_t seq, std::string_view frame, std::string* out);
  // Whether `mac` is FrameMac(key, seq, frame), compared in constant time.
  bool Verify(uint64_t seq, std::string_view frame, std::string_view mac);

 private:
  void Compute(uint64_t seq, std::string_view frame, unsigned char* mac);  // kProofBytes at `mac`

  ::evp_mac_ctx_st* ctx_ = nullptr;
};

// Constant-time comparison of any two strings (their lengths may leak).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// Constant-time comparison of two proofs (false when sizes differ).
bool ProofsEqual(std::string_view a, std::string_view b);

// Reads a secret file: its first line, without surrounding whitespace. An
// empty secret, or one under 16 bytes, is refused (a guessable secret is no
// secret); so is a file other users may read (a warning only: `*warning`).
Result<std::string> ReadSecretFile(const std::string& path, std::string* warning);

// Checks a secret given inline (at least 16 bytes).
Status CheckSecret(std::string_view secret);

// SHA-256 of `data` as 64 lower-case hex digits (ACL passwords are kept so).
std::string Sha256Hex(std::string_view data);

std::string ToHex(std::string_view bytes);
// Decodes lower- or upper-case hex; false on anything else.
bool FromHex(std::string_view hex, std::string* out);

}  // namespace shoal
