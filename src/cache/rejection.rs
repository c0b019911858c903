//! What every attachment (`MesClient`, `BearerAuth`, `BearerAuthLayer`) does
//! after a resource server refused a token (401): the one renewal policy.
//!
//! - A refused token is renewed once: invalidated, and the request retried
//!   with a fresh one.
//! - A token younger than `min_refresh_interval` is not renewed: a crowd of
//!   401s cannot turn into a crowd of token requests.
//! - When the fresh token is refused too, renewals stop for
//!   `unauthorized_cooldown`: the resource server does not trust this AIM or
//!   expects another audience, and asking AIM again will not change that.
//! - A 401 that is not retried (its body cannot be replayed) invalidates the
//!   token too, but no retry tells whether MES refuses fresh tokens: the
//!   next such 401, for the token that replaced it, within
//!   `unauthorized_cooldown`, counts as that answer. Without it, a MES
//!   refusing every token would cost a token request per streamed upload.
//!   A replacement that MES accepted (a 2xx) settles it: its later 401 is a
//!   new refusal (AIM rotated its key), renewed as any other.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{millis, Cache, TARGET};
use crate::error::{Error, ErrorKind, Result};
use crate::token::AccessToken;

impl Cache {
    /// After a 401 for `refused`: the fresh token to retry with, or the
    /// `Unauthorized` error to return when no renewal may be made.
    pub(crate) async fn renew_refused(&self, refused: &AccessToken) -> Result<AccessToken> {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let off_until = shared.renewals_off_until_ms.load(Ordering::Acquire);
        if now < off_until {
            return Err(fresh_token_refused(Duration::from_millis(off_until - now)));
        }
        if shared.is_young(refused) {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "the resource server refused (HTTP 401) a token fetched from AIM less than {:?} ago; not renewing it yet: check that it trusts this AIM and expects this client's audience",
                    shared.config.min_refresh_interval
                ),
            )
            .with_status(401));
        }
        let _ = shared.invalidate(refused);
        let fresh = self.token().await?;
        if fresh.same_as(refused) {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "the resource server refused the access token (HTTP 401) and no newer one is available yet",
            )
            .with_status(401));
        }
        Ok(fresh)
    }

    /// A 401 for `refused` that is not retried (the request body cannot be
    /// replayed). Outside the cool-down it invalidates the token, so the next
    /// call fetches a new one; when `refused` is the token that replaced one
    /// refused this way, within `unauthorized_cooldown`, MES refuses fresh
    /// tokens too: the cool-down starts, as after a refused retry.
    pub(crate) fn refused_unretried(&self, refused: &AccessToken) {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        if now < shared.renewals_off_until_ms.load(Ordering::Acquire) {
            return;
        }
        let since = shared.unretried_since_ms.load(Ordering::Acquire);
        let cooldown = millis(shared.config.unauthorized_cooldown);
        let replacement = since != 0 && crate::clock::unix_millis(refused.issued_at()) >= since;
        if replacement && now < since.saturating_add(cooldown) {
            drop(self.fresh_refused(refused));
            return;
        }
        if shared.invalidate(refused) {
            // 0 means "none pending": a clock at the epoch still counts.
            shared
                .unretried_since_ms
                .store(now.max(1), Ordering::Release);
        }
    }

    /// A resource server served a request made with `token` (a 2xx). When
    /// it replaced a token refused without retry, that refusal is settled:
    /// MES takes fresh tokens. One atomic load when nothing is pending (the
    /// common case, on every request).
    pub(crate) fn accepted(&self, token: &AccessToken) {
        let pending = &self.shared.unretried_since_ms;
        let since = pending.load(Ordering::Acquire);
        if since != 0 && crate::clock::unix_millis(token.issued_at()) >= since {
            // Only this refusal: a newer one keeps its own mark.
            let _ = pending.compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// The retry with the fresh token `fresh` was refused too: renewals stop
    /// for the cool-down; the error says why.
    pub(crate) fn fresh_refused(&self, fresh: &AccessToken) -> Error {
        let shared = &self.shared;
        let cooldown = shared.config.unauthorized_cooldown;
        let until = shared.clock.now_ms().saturating_add(millis(cooldown));
        shared
            .renewals_off_until_ms
            .fetch_max(until, Ordering::AcqRel);
        // Settled: after the cool-down, a refusal renews again.
        shared.unretried_since_ms.store(0, Ordering::Release);
        tracing::warn!(
            target: TARGET,
            authority = fresh.authority(),
            cooldown_s = cooldown.as_secs(),
            "the resource server refused a freshly fetched token too; not renewing during the cool-down"
        );
        fresh_token_refused(cooldown)
    }
}

fn fresh_token_refused(remaining: Duration) -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        format!(
            "the resource server refused a freshly fetched token too (HTTP 401): it does not trust this AIM, or expects another audience (check the MES server's AIM configuration and the client's scopes); not renewing for {}s",
            remaining.as_secs().max(1)
        ),
    )
    .with_status(401)
}
