//! One token request. SKELETON (issue #2): signatures only.

use std::sync::Arc;

use crate::cache::{BoxFuture, TokenSource};
use crate::client::AimClientBuilder;
use crate::clock::Clock;
use crate::credentials::ClientCredentials;
use crate::error::{Error, Result};
use crate::token::AccessToken;

/// Everything one token request needs, checked.
#[derive(Debug)]
pub(crate) struct ExchangeConfig {
    pub(crate) labels: Vec<String>,
    pub(crate) credentials: ClientCredentials,
    pub(crate) clock: Arc<dyn Clock>,
}

impl ExchangeConfig {
    pub(crate) fn from_builder(
        builder: &AimClientBuilder,
        credentials: ClientCredentials,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let authority = builder.authority.clone().ok_or_else(|| {
            Error::config("no authority: set .authority(\"sms01.plant.local\") or AIM_AUTHORITY")
        })?;
        Ok(ExchangeConfig {
            labels: vec![authority],
            credentials,
            clock,
        })
    }
}

/// Sends token requests.
#[derive(Debug)]
pub(crate) struct Exchanger {
    config: ExchangeConfig,
}

impl Exchanger {
    pub(crate) fn new(config: ExchangeConfig) -> Result<Self> {
        Ok(Exchanger { config })
    }

    pub(crate) fn primary_label(&self) -> &str {
        &self.config.labels[0]
    }
}

impl TokenSource for Exchanger {
    fn authority_count(&self) -> usize {
        self.config.labels.len()
    }

    fn authority_label(&self, index: usize) -> &str {
        &self.config.labels[index]
    }

    fn fetch(&self, _index: usize) -> BoxFuture<'_, Result<AccessToken>> {
        let _ = (&self.config.credentials, &self.config.clock);
        Box::pin(async { Err(Error::config("exchange not implemented yet")) })
    }
}
