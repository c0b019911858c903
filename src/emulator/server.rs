//! The listener and the connections: accept loop on 127.0.0.1, optional
//! TLS, http/1.1 and h2, faults applied before routing, and stop on
//! suspend or drop.
//!
//! Every task of one listening period holds a receiver of a `watch`
//! channel whose sender lives in [`Running`]; dropping the sender (suspend,
//! drop of the emulator) ends the accept loop, every connection and every
//! h2 stream task.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service as _};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::faults::{self, Action};
use super::state::State;
use super::{identity, mes, register, Endpoint};
use crate::error::{Error, ErrorKind, Result};

/// Binds `127.0.0.1:port` (0: any free port).
pub(crate) fn bind(port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listen = || -> std::io::Result<TcpListener> {
        let socket = TcpSocket::new_v4()?;
        // Resume must rebind the port while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // Thousands of clients connect at once in load tests; the usual
        // backlog of 1024 would reset some of them.
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| {
        Error::new(
            ErrorKind::Transport,
            format!("emulator: cannot listen on {addr}: {e}"),
        )
        .with_source(e)
    })
}

/// Capped by the kernel (`net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 16_384;

/// The server: what every listening period shares.
pub(crate) struct Server {
    app: Arc<App>,
    port: u16,
    running: Mutex<Option<Running>>,
}

/// The request handling of the emulator.
struct App {
    state: Arc<State>,
    router: TowerToHyperService<Router>,
    tls: Option<TlsAcceptor>,
}

/// One listening period, from start or resume to suspend or drop.
struct Running {
    _stop: watch::Sender<()>,
    accept: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Server {
    /// Serves `listener`, bound to `port` by [`bind`].
    pub(crate) fn start(
        listener: TcpListener,
        port: u16,
        state: Arc<State>,
        tls: Option<TlsAcceptor>,
    ) -> Server {
        let router = identity::router()
            .merge(register::router())
            .merge(mes::router())
            .with_state(state.clone());
        let app = Arc::new(App {
            state,
            router: TowerToHyperService::new(router),
            tls,
        });
        let running = Running::spawn(listener, app.clone());
        Server {
            app,
            port,
            running: Mutex::new(Some(running)),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Stops listening and closes every connection; returns once the
    /// listening socket is closed.
    pub(crate) async fn suspend(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut running) = running {
            running.accept.abort();
            // The listener is closed when the aborted task is dropped.
            let _ = (&mut running.accept).await;
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn resume(&self) -> Result<()> {
        if self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return Ok(());
        }
        let listener = bind(self.port)?;
        let mut slot = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(Running::spawn(listener, self.app.clone()));
        }
        Ok(())
    }
}

impl Running {
    fn spawn(listener: TcpListener, app: Arc<App>) -> Running {
        let (stop_tx, stop_rx) = watch::channel(());
        let accept = tokio::spawn(accept_loop(listener, app, stop_rx));
        Running {
            _stop: stop_tx,
            accept,
        }
    }
}

/// Resolves once the listening period ends (the sender is dropped).
async fn stopped(mut stop: watch::Receiver<()>) {
    while stop.changed().await.is_ok() {}
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, stop: watch::Receiver<()>) {
    let mut builder = auto::Builder::new(StopExecutor { stop: stop.clone() });
    // No timer: with paused tokio time a header timeout would fire at once.
    builder.http1().header_read_timeout(None);
    builder.http2().max_concurrent_streams(16_384);
    let builder = Arc::new(builder);
    let stop_signal = stopped(stop.clone());
    tokio::pin!(stop_signal);
    loop {
        tokio::select! {
            biased;
            () = &mut stop_signal => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = serve(stream, app.clone(), builder.clone());
                    tokio::spawn(until_stopped(conn, stop.clone()));
                }
                // Out of file descriptors and the like: wait, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Runs `fut` until it completes or the listening period ends.
async fn until_stopped(fut: impl Future<Output = ()>, stop: watch::Receiver<()>) {
    // Biased: once stopped, not one more request is served.
    tokio::select! {
        biased;
        () = stopped(stop) => {}
        () = fut => {}
    }
}

/// Spawns h2 stream tasks that also end with the listening period.
#[derive(Clone)]
struct StopExecutor {
    stop: watch::Receiver<()>,
}

impl<F> hyper::rt::Executor<F> for StopExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let stop = self.stop.clone();
        tokio::spawn(until_stopped(
            async move {
                fut.await;
            },
            stop,
        ));
    }
}

async fn serve(stream: TcpStream, app: Arc<App>, builder: Arc<auto::Builder<StopExecutor>>) {
    let service = {
        let app = app.clone();
        service_fn(move |req| handle(app.clone(), req))
    };
    // Connection errors (client gone, injected drop) end the connection;
    // there is nobody to report them to.
    match &app.tls {
        Some(acceptor) => {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        }
        None => {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }
}

/// Returned by the service to make hyper close the connection unanswered.
#[derive(Debug)]
struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// Counts the request, applies any injected fault, then routes it.
async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, DroppedByFault> {
    let mut resp = route(&app, req).await?;
    dated(&mut resp, app.state.clock.now());
    Ok(resp)
}

/// Sets `Date` from the emulator's clock (hyper would use the real one), so
/// a skewed emulator clock shows as server clock skew, as a real AIM's does.
fn dated(resp: &mut Response<Body>, now: std::time::SystemTime) {
    if let Some(value) = http_date(Some(now)) {
        resp.headers_mut().insert(axum::http::header::DATE, value);
    }
}

/// `time` as an HTTP date, or none when there is no such time (an
/// overflowed sum) or HTTP dates cannot say it: httpdate panics outside
/// 1970..=9999, and a test clock or fault may be anywhere.
pub(crate) fn http_date(time: Option<std::time::SystemTime>) -> Option<axum::http::HeaderValue> {
    const YEAR_10000: u64 = 253_402_300_800;
    let time = time?;
    let in_range = time
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|d| d.as_secs() < YEAR_10000);
    if !in_range {
        return None;
    }
    axum::http::HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok()
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, DroppedByFault> {
    if let Some(endpoint) = Endpoint::of_path(req.uri().path()) {
        app.state.counters.hit(endpoint);
        if let Some(fault) = app.state.faults.next(endpoint) {
            match faults::apply(fault, endpoint, app.state.clock.as_ref()) {
                Action::Respond(resp) => return Ok(resp),
                Action::Drop => return Err(DroppedByFault),
                Action::Delay(d) => tokio::time::sleep(d).await,
            }
        }
    }
    let resp: Result<Response<Body>, Infallible> = app.router.call(req).await;
    match resp {
        Ok(resp) => Ok(resp),
        Err(never) => match never {},
    }
}
