//! Who may do what: roles, bearer tokens hashed at rest, Unix peer credentials.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::MonitorError;

/// What a caller may do. Each role includes what the roles before it may do,
/// except that only [`Role::Auditor`] reads the security audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything the page shows (pools, supervisors, events, alerts,
    /// metrics); changes nothing.
    Viewer,
    /// A viewer who may also act: restart a worker or a supervised child,
    /// resize a pool, open or close its breaker, drain it. Reads the action log.
    Operator,
    /// A viewer who also reads the action log and the security audit log
    /// (forkyard-secure's), and may not act.
    Auditor,
}

impl Role {
    /// The role's name in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    pub(crate) fn may_act(self) -> bool {
        self == Role::Operator
    }

    pub(crate) fn may_read_actions(self) -> bool {
        matches!(self, Role::Operator | Role::Auditor)
    }

    pub(crate) fn may_read_audit(self) -> bool {
        self == Role::Auditor
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's name, or `uid:N` for a Unix-socket peer.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// A SHA-256 digest of a token: all the monitor keeps of it.
#[derive(Clone, PartialEq, Eq)]
struct TokenHash([u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a digest in full: it is as good as a token to a
        // brute-force search of weak tokens.
        write!(f, "sha256:{:02x}{:02x}..", self.0[0], self.0[1])
    }
}

fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// The credentials a monitor accepts: bearer tokens (kept as SHA-256
/// digests, compared in constant time) and, on its Unix socket, peer uids.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<(String, Role, TokenHash)>,
    uids: HashMap<u32, Role>,
}

impl Access {
    /// No credentials: every request is refused with 401.
    pub fn new() -> Access {
        Access::default()
    }

    /// Accepts `token` (sent as `Authorization: Bearer <token>`) for `role`,
    /// under `name` in the action log. Only its SHA-256 digest is kept.
    pub fn token(mut self, name: impl Into<String>, role: Role, token: &str) -> Access {
        self.tokens.push((name.into(), role, hash(token)));
        self
    }

    /// Accepts a token given as its SHA-256 digest in hex (64 digits), as
    /// kept in a config file, so the token itself is never stored.
    pub fn token_sha256(
        mut self,
        name: impl Into<String>,
        role: Role,
        hex: &str,
    ) -> Result<Access, MonitorError> {
        let name = name.into();
        let digest = parse_hex32(hex).ok_or(MonitorError::InvalidDigest)?;
        self.tokens.push((name, role, TokenHash(digest)));
        Ok(self)
    }

    /// Makes a fresh random token (32 bytes from the OS, in hex) for `role`,
    /// keeps its digest and returns the token: print it once, it is not kept.
    pub fn generate(
        &mut self,
        name: impl Into<String>,
        role: Role,
    ) -> Result<String, MonitorError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(MonitorError::Random)?;
        let token = to_hex(&bytes);
        self.tokens.push((name.into(), role, hash(&token)));
        Ok(token)
    }

    /// Gives peers on the Unix socket whose uid is `uid` the role `role`
    /// (read with `SO_PEERCRED`, which the kernel fills in: a peer cannot lie).
    pub fn uid(mut self, uid: u32, role: Role) -> Access {
        self.uids.insert(uid, role);
        self
    }

    /// Who `token` belongs to. Every known digest is compared, each in
    /// constant time, so the time taken says nothing about which matched or
    /// how much of it.
    pub(crate) fn check_token(&self, token: &str) -> Option<Principal> {
        let digest = hash(token);
        let mut found = None;
        for (name, role, known) in &self.tokens {
            if bool::from(known.0.ct_eq(&digest.0)) && found.is_none() {
                found = Some(Principal {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }

    pub(crate) fn check_uid(&self, uid: u32) -> Option<Principal> {
        self.uids.get(&uid).map(|&role| Principal {
            name: format!("uid:{uid}"),
            role,
        })
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 digest of `token` in hex, for [`Access::token_sha256`].
pub fn token_sha256(token: &str) -> String {
    to_hex(&hash(token).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_by_digest_only() {
        let mut access = Access::new().token("alice", Role::Operator, "s3cret");
        let generated = access.generate("gen", Role::Viewer).unwrap();
        assert_eq!(generated.len(), 64);
        assert_eq!(access.check_token("s3cret").unwrap().role, Role::Operator);
        assert_eq!(access.check_token(&generated).unwrap().name, "gen");
        assert!(access.check_token("s3cre").is_none());
        assert!(access.check_token("").is_none());
        // The digest form is accepted, and the token is nowhere in memory.
        let access = Access::new()
            .token_sha256("bob", Role::Auditor, &token_sha256("xyz"))
            .unwrap();
        assert_eq!(access.check_token("xyz").unwrap().role, Role::Auditor);
        assert!(!format!("{access:?}").contains("xyz"));
        assert!(Access::new().token_sha256("x", Role::Viewer, "zz").is_err());
    }

    #[test]
    fn roles_grant_what_the_docs_say() {
        let table: Vec<_> = [Role::Viewer, Role::Operator, Role::Auditor]
            .into_iter()
            .map(|r| (r, r.may_act(), r.may_read_actions(), r.may_read_audit()))
            .collect();
        assert_eq!(
            table,
            [
                (Role::Viewer, false, false, false),
                (Role::Operator, true, true, false),
                (Role::Auditor, false, true, true),
            ]
        );
    }
}
