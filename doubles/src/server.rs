//! Serving a double in a background thread, with the ability to go down and come back on the
//! same port (a target that is unreachable for a while refuses connections, it does not hang).

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer};

/// Builds the app for each worker; cloned into every server start.
pub type Configure = std::sync::Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync>;

pub struct Served {
    pub port: u16,
    configure: Configure,
    running: Option<(ServerHandle, JoinHandle<()>)>,
}

impl Served {
    /// Serves on 127.0.0.1 at `port` (0: any free port).
    pub fn start(port: u16, configure: Configure) -> std::io::Result<Served> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let mut s = Served {
            port,
            configure,
            running: None,
        };
        s.run(listener)?;
        Ok(s)
    }

    fn run(&mut self, listener: TcpListener) -> std::io::Result<()> {
        let configure = self.configure.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let server = HttpServer::new(move || {
                    let c = configure.clone();
                    App::new().configure(move |cfg| c(cfg))
                })
                .workers(2)
                .disable_signals()
                .shutdown_timeout(0)
                .listen(listener);
                match server {
                    Ok(server) => {
                        let server = server.run();
                        let _ = tx.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the double's server thread died"))??;
        self.running = Some((handle, thread));
        Ok(())
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops listening: connections are refused until [`Served::resume`].
    pub fn go_down(&mut self) {
        if let Some((handle, thread)) = self.running.take() {
            actix_web::rt::System::new().block_on(handle.stop(false));
            let _ = thread.join();
        }
    }

    /// Listens again on the same port, with the same state.
    pub fn resume(&mut self) -> std::io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port))?;
        self.run(listener)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.go_down();
    }
}
