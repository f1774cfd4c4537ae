//! Liveness and readiness: ready once every enabled probe is attached and the first read of
//! its maps succeeded.

use std::sync::Mutex;

/// Readiness, shared between the daemon loop and the HTTP server.
#[derive(Debug)]
pub struct Health {
    not_ready: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            not_ready: Mutex::new(Some("probes are not attached yet".into())),
        }
    }
}

impl Health {
    /// `Ok(())` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.not_ready.lock().expect("health lock") {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    /// Marks the daemon not ready, with the reason served by `/readyz`.
    pub fn set_not_ready(&self, why: impl Into<String>) {
        *self.not_ready.lock().expect("health lock") = Some(why.into());
    }

    /// Marks the daemon ready.
    pub fn set_ready(&self) {
        *self.not_ready.lock().expect("health lock") = None;
    }
}
