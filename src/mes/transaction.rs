//! MES transactions: `POST api/v3/transaction` opens one, calls carrying
//! its `trans_id` join it, `PUT api/v3/transaction?action=commit|abort`
//! ends it.

use std::fmt;

use reqwest::Method;

use super::models::TransactionModel;
use super::MesClient;
use crate::error::{Error, ErrorKind, Result};

/// An open MES transaction. Its [`mes`](Self::mes) client sends the
/// transaction's `trans_id` with every call; the changes those calls make
/// are seen by other callers only after [`commit`](Self::commit), and
/// [`abort`](Self::abort) drops them. MES drops them too when the
/// transaction times out (then a call with its ID fails with
/// [`ErrorKind::NotFound`], "transaction ID ... timed out").
///
/// Dropped without `commit` or `abort` (an early `?`, a panic), it is
/// aborted in the background, best effort, with a warning in the log: on
/// the runtime it is dropped in, or else on the one it was opened on while
/// that one runs. End it explicitly: a runtime that ends right after the
/// drop (the end of `main`) never runs the abort, and MES keeps the
/// transaction until its timeout.
///
/// ```no_run
/// # async fn run(mes: aim_token::MesClient) -> Result<(), aim_token::Error> {
/// let job = mes.job("WO-1001", "Fill", 0).await?;
/// let tx = mes.transaction().await?;
/// let running = tx.mes().start_job(&job.clone().on(job.ent_id)).await?;
/// tx.commit().await?;
/// # let _ = running;
/// # Ok(()) }
/// ```
#[must_use = "a transaction is aborted when dropped; call commit() or abort()"]
pub struct MesTransaction {
    mes: MesClient,
    id: String,
    open: bool,
    /// The runtime it was opened on: Drop aborts it there when dropped
    /// outside any runtime (a sync wrapper's caller), if it still runs.
    runtime: Option<tokio::runtime::Handle>,
}

impl MesClient {
    /// Opens an MES transaction: `POST api/v3/transaction`.
    pub async fn transaction(&self) -> Result<MesTransaction> {
        let path = "api/v3/transaction";
        // A transaction is not nested in another: no trans_id here.
        let plain = MesClient {
            trans_id: None,
            ..self.clone()
        };
        // POST without a body: AVEVA documents none for this call.
        let model: TransactionModel = plain.call_json(Method::POST, path, None).await?;
        // It goes into a header on every call of the transaction.
        if super::header_text(&model.trans_id).is_none() {
            return Err(Error::new(
                ErrorKind::InvalidResponse,
                "MES answered POST api/v3/transaction without a usable trans_id \
                 (empty, or characters other than printable ASCII)",
            ));
        }
        Ok(MesTransaction {
            mes: plain.with_trans_id(&model.trans_id),
            id: model.trans_id,
            open: true,
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }
}

impl MesTransaction {
    /// The transaction ID MES returned.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The client whose calls take part in this transaction.
    pub fn mes(&self) -> &MesClient {
        &self.mes
    }

    /// Makes the transaction's changes everyone's:
    /// `PUT api/v3/transaction?action=commit`. A transaction that timed out
    /// fails with [`ErrorKind::NotFound`] and its changes are gone. Any
    /// other failure aborts the transaction in the background, as a drop
    /// does; when MES's answer never arrived, the error says the outcome is
    /// unknown and is not [transient](crate::Error::is_transient).
    pub async fn commit(mut self) -> Result<()> {
        self.end("commit").await
    }

    /// Drops the transaction's changes: `PUT api/v3/transaction?action=abort`.
    pub async fn abort(mut self) -> Result<()> {
        self.end("abort").await
    }

    async fn end(&mut self, action: &str) -> Result<()> {
        let result = end(&self.mes, action).await;
        // Only success or a 404 (it timed out already) settles it: after
        // any other failure MES may still hold it open, with its locks,
        // until its timeout, so Drop aborts it.
        if result.is_ok() || result.as_ref().is_err_and(|e| e.status() == Some(404)) {
            self.open = false;
        }
        match result {
            // No answer to a commit: MES may have committed it or not. It
            // cannot be committed again (Drop aborts it), and redoing its
            // calls may do them twice: not "retry later".
            Err(e) if action == "commit" && e.status().is_none() => Err(e
                .context(
                    "MES may or may not have committed the transaction (its answer did not \
                     arrive); it is being aborted: check the data before redoing the calls",
                )
                .transient(false)),
            other => other,
        }
    }
}

async fn end(mes: &MesClient, action: &str) -> Result<()> {
    let path = format!("api/v3/transaction?action={action}");
    mes.call_json::<serde::de::IgnoredAny>(Method::PUT, &path, None)
        .await
        .map(drop)
}

impl Drop for MesTransaction {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // The runtime here, else the one it was opened on. One that has shut
        // down drops the task unrun: then MES's transaction timeout drops
        // the changes.
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.take());
        let Some(runtime) = runtime else {
            tracing::warn!(
                trans_id = %self.id,
                "MES transaction dropped without commit() or abort() and no tokio runtime to \
                 abort it: MES drops its changes when the transaction times out"
            );
            return;
        };
        tracing::warn!(
            trans_id = %self.id,
            "MES transaction dropped without commit() or abort(): aborting it, best effort"
        );
        let mes = self.mes.clone();
        runtime.spawn(async move {
            if let Err(e) = end(&mes, "abort").await {
                tracing::warn!("aborting a dropped MES transaction failed: {e}");
            }
        });
    }
}

impl fmt::Debug for MesTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MesTransaction")
            .field("trans_id", &self.id)
            .field("open", &self.open)
            .finish()
    }
}
