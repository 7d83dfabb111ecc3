//! The dashboard's login sessions, in this server's memory: logging in
//! exchanges a token for a random session id (the cookie), so the token
//! itself never sits in the browser. A session carries its token's name,
//! scope and hash; it ends at logout, when its token expires (at the latest
//! [`MAX_SESSION_MS`] after login), and when the server restarts. Each page
//! looks its token up again, so revoking the token ends its sessions too.
//! Another server of the cluster does not know this one's sessions: put
//! the dashboard behind one server, or log in on each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dispatch_core::Ts;
use dispatch_store::TokenScope;

/// The longest a session lasts, whatever its token's expiry (12 hours).
pub const MAX_SESSION_MS: i64 = 12 * 3_600_000;

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Login {
    /// The hash its token is stored by (never the token).
    pub token_hash: String,
    pub name: String,
    pub scope: TokenScope,
    /// When the session ends.
    pub expires_at: Ts,
}

/// Every live session of this server, by id.
#[derive(Clone, Default)]
pub struct Logins {
    sessions: Arc<Mutex<HashMap<String, Login>>>,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins").finish_non_exhaustive()
    }
}

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Login>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `login`; returns its id (32 random bytes, hex).
    pub fn open(&self, login: Login, now: Ts) -> std::io::Result<String> {
        let id = crate::auth::random_hex(32)?;
        let mut sessions = self.lock();
        sessions.retain(|_, l| l.expires_at > now);
        sessions.insert(id.clone(), login);
        Ok(id)
    }

    /// The live session `id`, if any (an ended one is forgotten).
    pub fn get(&self, id: &str, now: Ts) -> Option<Login> {
        let mut sessions = self.lock();
        match sessions.get(id) {
            Some(l) if l.expires_at > now => Some(l.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`.
    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(expires_at: Ts) -> Login {
        Login {
            token_hash: "h".into(),
            name: "ada".into(),
            scope: TokenScope::Read,
            expires_at,
        }
    }

    #[test]
    fn a_session_lives_until_it_expires_or_is_closed() {
        let logins = Logins::default();
        let a = logins.open(login(100), 0).expect("urandom");
        let b = logins.open(login(100), 0).expect("urandom");
        assert_ne!(a, b, "random ids");
        assert_eq!(a.len(), 64);
        assert!(logins.get(&a, 99).is_some());
        assert!(logins.get(&a, 100).is_none(), "expired");
        logins.close(&b);
        assert!(logins.get(&b, 0).is_none(), "closed");
        assert!(logins.get("guess", 0).is_none());
    }
}
