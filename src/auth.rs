//! How requests are authenticated: nothing (a Docker Engine), an API key, or
//! a login whose token is renewed once when Portainer refuses it.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use ureq::RequestBuilder;

use crate::error::Error;

/// The client's way of authenticating.
pub(crate) enum Auth {
    /// No credentials: a Docker Engine reached directly.
    None,
    /// Portainer's `X-API-Key` header.
    ApiKey(String),
    /// Username and password, exchanged for a token at `/api/auth`.
    Login(Login),
}

/// A username and password, and the token the last login returned.
pub(crate) struct Login {
    username: String,
    password: String,
    /// Held while logging in, so that concurrent callers wait for one login
    /// instead of each making their own.
    session: Mutex<Session>,
}

#[derive(Default)]
struct Session {
    token: Option<Arc<str>>,
    /// Counts logins, so a caller can tell whether the token it was refused
    /// with has been replaced meanwhile.
    generation: u64,
}

/// What one request carries.
#[derive(Clone)]
pub(crate) enum Credential {
    None,
    ApiKey(Arc<str>),
    Bearer { token: Arc<str>, generation: u64 },
}

impl Auth {
    pub(crate) fn login(username: String, password: String) -> Auth {
        Auth::Login(Login {
            username,
            password,
            session: Mutex::new(Session::default()),
        })
    }

    /// The credential for the next request, logging in first when there is
    /// no token yet. `log_in` gets the username and password and returns a
    /// token.
    pub(crate) fn credential(
        &self,
        log_in: impl FnOnce(&str, &str) -> Result<String, Error>,
    ) -> Result<Credential, Error> {
        match self {
            Auth::None => Ok(Credential::None),
            Auth::ApiKey(key) => Ok(Credential::ApiKey(Arc::from(key.as_str()))),
            Auth::Login(login) => login.credential(None, log_in),
        }
    }

    /// A fresh credential after the server refused `stale` with 401, or
    /// `None` when logging in again cannot help (no login, or an API key).
    /// Several callers refused with the same token share one new login.
    pub(crate) fn renew(
        &self,
        stale: &Credential,
        log_in: impl FnOnce(&str, &str) -> Result<String, Error>,
    ) -> Option<Result<Credential, Error>> {
        match (self, stale) {
            (Auth::Login(login), Credential::Bearer { generation, .. }) => {
                Some(login.credential(Some(*generation), log_in))
            }
            _ => None,
        }
    }

    /// What `Debug` output shows: the kind, and never a secret.
    pub(crate) fn describe(&self) -> String {
        match self {
            Auth::None => "none".into(),
            Auth::ApiKey(_) => "API key <redacted>".into(),
            Auth::Login(login) => format!("login {:?}, password <redacted>", login.username),
        }
    }
}

impl Login {
    /// The current token, after a login when there is none or when the
    /// token of generation `refused` is still the current one.
    fn credential(
        &self,
        refused: Option<u64>,
        log_in: impl FnOnce(&str, &str) -> Result<String, Error>,
    ) -> Result<Credential, Error> {
        let mut session = self.session.lock();
        let stale = refused.is_some_and(|generation| generation == session.generation);
        if session.token.is_none() || stale {
            session.token = None;
            let token = log_in(&self.username, &self.password)?;
            session.token = Some(Arc::from(token));
            session.generation += 1;
        }
        Ok(Credential::Bearer {
            // Set just above when it was missing.
            token: session.token.clone().expect("a token after logging in"),
            generation: session.generation,
        })
    }
}

impl Credential {
    /// Adds the credential's header to `request`: one of `X-API-Key` or
    /// `Authorization`, never both (Portainer answers 403 to both).
    pub(crate) fn apply<B>(&self, request: RequestBuilder<B>) -> RequestBuilder<B> {
        match self {
            Credential::None => request,
            Credential::ApiKey(key) => request.header("X-API-Key", &**key),
            Credential::Bearer { token, .. } => {
                request.header("Authorization", format!("Bearer {token}"))
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Credential::Bearer { generation, .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .field("generation", generation)
                .finish(),
        }
    }
}

/// Checks that a secret can go into an HTTP header as it is.
pub(crate) fn check_header_value(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(Error::Config(format!(
            "the {what} is empty or holds spaces or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    use super::*;

    fn token_of(credential: &Credential) -> String {
        match credential {
            Credential::Bearer { token, .. } => token.to_string(),
            other => panic!("not a token: {other:?}"),
        }
    }

    #[test]
    fn the_first_request_logs_in_and_later_ones_reuse_the_token() {
        let auth = Auth::login("admin".into(), "hunter2".into());
        let logins = AtomicUsize::new(0);
        let log_in = |user: &str, password: &str| {
            assert_eq!((user, password), ("admin", "hunter2"));
            Ok(format!("t{}", logins.fetch_add(1, Ordering::SeqCst) + 1))
        };
        let first = auth.credential(log_in).unwrap();
        let second = auth.credential(log_in).unwrap();
        assert_eq!(token_of(&first), "t1");
        assert_eq!(token_of(&second), "t1");
        assert_eq!(logins.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn callers_refused_with_one_token_share_one_new_login() {
        let auth = Auth::login("admin".into(), "pw".into());
        let logins = AtomicUsize::new(0);
        let log_in =
            |_: &str, _: &str| Ok(format!("t{}", logins.fetch_add(1, Ordering::SeqCst) + 1));
        let stale = auth.credential(log_in).unwrap();
        thread::scope(|scope| {
            let renewals: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| auth.renew(&stale, log_in).unwrap().unwrap()))
                .collect();
            for renewal in renewals {
                assert_eq!(token_of(&renewal.join().unwrap()), "t2");
            }
        });
        assert_eq!(logins.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_login_leaves_no_token_and_an_api_key_is_never_renewed() {
        let auth = Auth::login("admin".into(), "pw".into());
        let refused = auth.credential(|_, _| {
            Err(Error::Unauthorized {
                message: "Invalid credentials".into(),
            })
        });
        assert!(matches!(refused, Err(Error::Unauthorized { .. })));
        let retried = auth.credential(|_, _| Ok("t".into())).unwrap();
        assert_eq!(token_of(&retried), "t");

        let key = Auth::ApiKey("ptr_k".into());
        let credential = key.credential(|_, _| unreachable!()).unwrap();
        assert!(key.renew(&credential, |_, _| unreachable!()).is_none());
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let auth = Auth::login("admin".into(), "hunter2".into());
        let credential = auth.credential(|_, _| Ok("eyJtoken".into())).unwrap();
        let shown = format!(
            "{} {credential:?} {:?}",
            auth.describe(),
            Credential::ApiKey(Arc::from("ptr_secret"))
        );
        for secret in ["hunter2", "eyJtoken", "ptr_secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
