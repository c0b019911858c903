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
        self.invalidate(refused);
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

    /// The retry with the fresh token `fresh` was refused too: renewals stop
    /// for the cool-down; the error says why.
    pub(crate) fn fresh_refused(&self, fresh: &AccessToken) -> Error {
        let shared = &self.shared;
        let cooldown = shared.config.unauthorized_cooldown;
        let until = shared.clock.now_ms().saturating_add(millis(cooldown));
        shared
            .renewals_off_until_ms
            .fetch_max(until, Ordering::AcqRel);
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
