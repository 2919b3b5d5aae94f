//! cram-hmac authentication (spec §2.5; drbd_receiver.c: drbd_do_auth).
//!
//! Both sides, at once:
//! 1. send P_AUTH_CHALLENGE with 64 random bytes ([`make_challenge`]);
//! 2. check the peer's challenge: 64..=128 bytes, not equal to ours ([`check_peer_challenge`]);
//! 3. send P_AUTH_RESPONSE = HMAC(secret, the *whole* peer challenge payload) ([`response`]);
//! 4. check the peer's response against HMAC(secret, our 64-byte challenge) ([`verify`]).
//!
//! The crate has no RNG: the caller supplies the challenge bytes.

use bytes::Bytes;
use hmac::{Hmac, Mac};

/// CHALLENGE_LEN (drbd_receiver.c): bytes in our challenge.
pub const CHALLENGE_LEN: usize = 64;
/// The kernel accepts a peer challenge of up to twice its own length.
pub const MAX_PEER_CHALLENGE_LEN: usize = 2 * CHALLENGE_LEN;
/// The secret is at most 63 bytes (SHARED_SECRET_MAX incl. NUL).
pub const MAX_SECRET_LEN: usize = crate::SHARED_SECRET_MAX - 1;

/// The `cram-hmac-alg` hashes we implement, by kernel crypto name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HmacAlg {
    Sha1,
    Sha256,
    Sha512,
    Md5,
}

/// Why authentication failed. `permanent()` tells whether the kernel would give up (go
/// StandAlone) rather than retry the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("cram-hmac-alg {0:?} is not supported (use sha1, sha256, sha512 or md5)")]
    UnknownAlgorithm(String),
    #[error("shared-secret is {len} bytes, at most {MAX_SECRET_LEN} allowed")]
    SecretTooLong { len: usize },
    #[error(
        "AuthChallenge payload of {len} bytes, expected {CHALLENGE_LEN}..={MAX_PEER_CHALLENGE_LEN}"
    )]
    ChallengeLength { len: usize },
    #[error("Peer presented the same challenge!")]
    SameChallenge,
    #[error("AuthResponse payload of {got} bytes, expected {expected} ({alg})")]
    ResponseLength {
        alg: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("Authentication of peer failed")]
    WrongResponse,
}

impl AuthError {
    /// drbd_do_auth returns -1 (no retry) for these, 0 (retry) for a badly sized response.
    pub fn permanent(&self) -> bool {
        !matches!(self, AuthError::ResponseLength { .. })
    }
}

impl HmacAlg {
    /// Parses a kernel crypto hash name as used in `cram-hmac-alg`.
    pub fn from_name(name: &str) -> Result<HmacAlg, AuthError> {
        match name {
            "sha1" => Ok(HmacAlg::Sha1),
            "sha256" => Ok(HmacAlg::Sha256),
            "sha512" => Ok(HmacAlg::Sha512),
            "md5" => Ok(HmacAlg::Md5),
            other => Err(AuthError::UnknownAlgorithm(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HmacAlg::Sha1 => "sha1",
            HmacAlg::Sha256 => "sha256",
            HmacAlg::Sha512 => "sha512",
            HmacAlg::Md5 => "md5",
        }
    }

    /// Digest size = P_AUTH_RESPONSE payload length.
    pub fn digest_len(self) -> usize {
        match self {
            HmacAlg::Sha1 => 20,
            HmacAlg::Sha256 => 32,
            HmacAlg::Sha512 => 64,
            HmacAlg::Md5 => 16,
        }
    }

    fn mac(self, secret: &[u8], msg: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so new_from_slice cannot fail.
        macro_rules! run {
            ($d:ty) => {{
                let mut m = <Hmac<$d> as Mac>::new_from_slice(secret)
                    .expect("HMAC takes keys of any length");
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            HmacAlg::Sha1 => run!(sha1::Sha1),
            HmacAlg::Sha256 => run!(sha2::Sha256),
            HmacAlg::Sha512 => run!(sha2::Sha512),
            HmacAlg::Md5 => run!(md5::Md5),
        }
    }
}

/// Our P_AUTH_CHALLENGE payload from 64 caller-supplied random bytes.
pub fn make_challenge(random: [u8; CHALLENGE_LEN]) -> Bytes {
    Bytes::copy_from_slice(&random)
}

/// Checks the peer's challenge as the kernel does (length 64..=128, not a copy of ours).
pub fn check_peer_challenge(mine: &[u8], peer: &[u8]) -> Result<(), AuthError> {
    if !(CHALLENGE_LEN..=MAX_PEER_CHALLENGE_LEN).contains(&peer.len()) {
        return Err(AuthError::ChallengeLength { len: peer.len() });
    }
    if mine.get(..CHALLENGE_LEN) == peer.get(..CHALLENGE_LEN) {
        return Err(AuthError::SameChallenge);
    }
    Ok(())
}

fn check_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() > MAX_SECRET_LEN {
        return Err(AuthError::SecretTooLong { len: secret.len() });
    }
    Ok(())
}

/// Our P_AUTH_RESPONSE payload: HMAC(secret, entire peer challenge). `secret` is the
/// shared-secret without a terminating NUL.
pub fn response(alg: HmacAlg, secret: &[u8], peer_challenge: &[u8]) -> Result<Bytes, AuthError> {
    check_secret(secret)?;
    Ok(Bytes::from(alg.mac(secret, peer_challenge)))
}

/// Verifies the peer's P_AUTH_RESPONSE against HMAC(secret, our challenge), in constant time.
pub fn verify(
    alg: HmacAlg,
    secret: &[u8],
    my_challenge: &[u8],
    peer_response: &[u8],
) -> Result<(), AuthError> {
    check_secret(secret)?;
    if peer_response.len() != alg.digest_len() {
        return Err(AuthError::ResponseLength {
            alg: alg.name(),
            expected: alg.digest_len(),
            got: peer_response.len(),
        });
    }
    let expected = alg.mac(secret, my_challenge);
    // Constant-time comparison: fold the differences instead of returning early.
    let diff = expected
        .iter()
        .zip(peer_response)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(AuthError::WrongResponse);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc2202_case_2() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let r = response(HmacAlg::Sha1, b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            r.as_ref(),
            [
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ]
        );
    }

    #[test]
    fn hmac_md5_and_sha256_match_rfc_vectors() {
        let r = response(HmacAlg::Md5, b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            r.as_ref(),
            [
                0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d,
                0xb7, 0x38
            ]
        );
        let r = response(HmacAlg::Sha256, b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(r[..4], [0x5b, 0xdc, 0xc1, 0x46]);
        assert_eq!(response(HmacAlg::Sha512, b"Jefe", b"x").unwrap().len(), 64);
    }

    #[test]
    fn both_sides_authenticate_each_other() {
        for alg in [
            HmacAlg::Sha1,
            HmacAlg::Sha256,
            HmacAlg::Sha512,
            HmacAlg::Md5,
        ] {
            let a = make_challenge([1; 64]);
            let b = make_challenge([2; 64]);
            check_peer_challenge(&a, &b).unwrap();
            let resp_from_b = response(alg, b"s3cret", &a).unwrap();
            verify(alg, b"s3cret", &a, &resp_from_b).unwrap();
            assert_eq!(
                verify(alg, b"other", &a, &resp_from_b),
                Err(AuthError::WrongResponse)
            );
        }
    }

    #[test]
    fn response_covers_whole_peer_challenge() {
        let long = [7u8; 100];
        let r = response(HmacAlg::Sha1, b"k", &long).unwrap();
        let r64 = response(HmacAlg::Sha1, b"k", &long[..64]).unwrap();
        assert_ne!(r, r64);
    }

    #[test]
    fn rejects_unknown_algorithm_by_name() {
        let e = HmacAlg::from_name("crc32c").unwrap_err();
        assert_eq!(e, AuthError::UnknownAlgorithm("crc32c".into()));
        assert!(e.to_string().contains("crc32c"));
    }

    #[test]
    fn rejects_bad_challenges_and_responses() {
        let a = [1u8; 64];
        assert_eq!(
            check_peer_challenge(&a, &[0; 63]),
            Err(AuthError::ChallengeLength { len: 63 })
        );
        assert_eq!(
            check_peer_challenge(&a, &[0; 129]),
            Err(AuthError::ChallengeLength { len: 129 })
        );
        assert_eq!(check_peer_challenge(&a, &a), Err(AuthError::SameChallenge));
        let e = verify(HmacAlg::Sha256, b"k", &a, &[0; 20]).unwrap_err();
        assert!(!e.permanent());
        assert!(AuthError::WrongResponse.permanent());
        assert!(matches!(
            response(HmacAlg::Sha1, &[b'x'; 64], &a),
            Err(AuthError::SecretTooLong { len: 64 })
        ));
    }
}
