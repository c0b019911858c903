//! The tokens a resource server refused here (a 401), remembered until they
//! expire: the store engine never adopts one again and deletes it where it
//! sees it, whoever writes it back (a late write, a restored backup).

use crate::token::AccessToken;

/// How many refused tokens are remembered by name (a renewal each, at most
/// one per `min_refresh_interval`; 40 bytes each).
const BY_NAME: usize = 64;

/// The refused tokens: the latest by name (a digest of the secret), and for
/// the older ones, forgotten by name, the latest expiry among them. A token
/// expiring no later than that was issued no later than one refused here:
/// refused too, so that every refusal holds while its token lasts.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    recent: Vec<Refused>,
    older_until_ms: u64,
}

#[derive(Debug)]
struct Refused {
    digest: [u8; 32],
    expires_at_ms: u64,
}

fn digest(token: &AccessToken) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.secret().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Refusals {
    /// Remembers that `token` was refused; forgets what expired by `now_ms`.
    pub(super) fn add(&mut self, token: &AccessToken, now_ms: u64) {
        let digest = digest(token);
        self.recent
            .retain(|r| r.expires_at_ms > now_ms && r.digest != digest);
        if self.recent.len() >= BY_NAME {
            // The one expiring first goes (also the one issued first, for
            // tokens of one lifetime): the fewest others fall under the bound.
            let first = self
                .recent
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.expires_at_ms)
                .map(|(i, _)| i);
            if let Some(first) = first {
                let forgotten = self.recent.swap_remove(first);
                self.older_until_ms = self.older_until_ms.max(forgotten.expires_at_ms);
            }
        }
        self.recent.push(Refused {
            digest,
            expires_at_ms: token.expires_at_ms(),
        });
    }

    /// Whether `token` was refused here (or expires no later than a
    /// refused token forgotten by name).
    pub(super) fn contains(&self, token: &AccessToken) -> bool {
        if token.expires_at_ms() <= self.older_until_ms {
            return true;
        }
        let digest = digest(token);
        self.recent.iter().any(|r| r.digest == digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn token(n: u64) -> AccessToken {
        let expires = UNIX_EPOCH + Duration::from_secs(1_000_000 + n);
        AccessToken::new(format!("token-{n}"), expires)
    }

    #[test]
    fn every_refusal_holds_while_its_token_lasts_however_many() {
        let now = 1_000_000_000;
        let mut refusals = Refusals::default();
        let count = u64::try_from(BY_NAME).unwrap() * 2 + 1;
        for n in 0..count {
            refusals.add(&token(n), now);
        }
        assert!(refusals.recent.len() <= BY_NAME);
        for n in 0..count {
            assert!(refusals.contains(&token(n)), "refusal {n} forgotten");
        }
        assert!(!refusals.contains(&token(count)), "a newer token refused");
        assert!(!refusals.contains(&AccessToken::new(
            "other",
            SystemTime::now() + Duration::from_secs(3600)
        )));
    }

    #[test]
    fn a_refusal_is_forgotten_once_its_token_expired() {
        let mut refusals = Refusals::default();
        refusals.add(&token(1), 0);
        let expired = token(1).expires_at_ms();
        refusals.add(&token(2), expired);
        assert_eq!(refusals.recent.len(), 1);
        // A clock set back keeps what it has, and refuses it still.
        refusals.add(&token(3), 0);
        assert!(refusals.contains(&token(2)) && refusals.contains(&token(3)));
    }
}
