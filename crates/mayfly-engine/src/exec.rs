//! Processes started in running instances (`exec`), and signals to them and to inits.
//!
//! An exec'd process is the driver's; the engine only checks the request (environment,
//! sizes, the instance's state), builds its process specification from the template's and
//! the instance's settings, and keeps a channel for its exit status.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mayfly_api::{ExecRequest, InstanceState};
use mayfly_driver::{ExitStatus, ProcessSpec};
use tokio::sync::oneshot;

use crate::error::from_driver;
use crate::instance::wrong_state;
use crate::{Engine, EngineError, lock, process};

/// An exec'd process: its id (to signal it) and how it will end.
#[derive(Debug)]
pub struct ExecHandle {
    /// Id for [`Engine::signal_exec`].
    pub exec_id: u64,
    /// Host pid.
    pub pid: i32,
    /// The master side of the terminal the process really got (made inside the instance),
    /// to use instead of the one passed.
    pub terminal: Option<OwnedFd>,
    /// Resolves when it ends.
    pub exit: oneshot::Receiver<ExitStatus>,
}

impl Engine {
    /// Runs a process in a running instance with `fds` as its stdio.
    pub async fn exec(
        self: &Arc<Self>,
        name: &str,
        req: ExecRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<ExecHandle, EngineError> {
        if req.command.is_empty() {
            return Err(EngineError::invalid(
                "no command given",
                "e.g. `mayfly exec NAME -- ls /`",
            ));
        }
        process::check_env(&req.env)
            .map_err(|e| EngineError::invalid(e, "e.g. `--env LANG=C.UTF-8`"))?;
        process::check_size(&req.command, &req.env, req.workdir.as_deref())?;
        if req.command.iter().any(|a| a.contains('\0')) {
            return Err(EngineError::invalid(
                "the command contains a NUL byte",
                "remove it",
            ));
        }
        if let Some(user) = &req.user {
            process::check_user(user, "user")?;
        }
        let slot = self.slot(name)?;
        let (state, version) = {
            let rt = lock(&slot.rt);
            (rt.shown_state(), rt.version)
        };
        if state != InstanceState::Running {
            return Err(wrong_state(&slot, state, "exec"));
        }
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        let tname = rec.template.clone();
        let template = self.db(move |s| s.template(&tname)).await?;
        let running = version.and_then(|v| template.version(v));
        let template_env = running.map(|v| v.config.env.clone()).unwrap_or_default();
        // The init's user unless the request names one (as `docker exec` does).
        let user = match &req.user {
            Some(u) => u.clone(),
            None => running
                .map(|v| process::init_user(&v.config, &rec.config))
                .unwrap_or_default(),
        };
        let template_dir = running
            .map(|v| v.config.workdir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let process = ProcessSpec {
            args: req.command.clone(),
            env: process::environment(
                &rec.name,
                req.tty,
                &[&template_env, &rec.config.env, &req.env],
            ),
            cwd: req.workdir.clone().unwrap_or(template_dir),
            user,
            tty: req.tty,
        };
        let exec_id = self.next_exec.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.execs).insert(exec_id, tx);
        match self.driver.exec(&slot.id, exec_id, process, fds).await {
            Ok(started) => Ok(ExecHandle {
                exec_id,
                pid: started.pid,
                terminal: started.terminal,
                exit: rx,
            }),
            Err(e) => {
                lock(&self.execs).remove(&exec_id);
                Err(from_driver(e))
            }
        }
    }

    /// Sends `signal` to an exec'd process.
    pub async fn signal_exec(&self, exec_id: u64, signal: i32) -> Result<(), EngineError> {
        self.driver
            .signal_exec(exec_id, signal)
            .await
            .map_err(EngineError::Driver)
    }

    /// Sends `signal` to an instance's init.
    pub async fn signal_instance(&self, name: &str, signal: i32) -> Result<(), EngineError> {
        let slot = self.slot(name)?;
        self.signal_instance_id(&slot.id, signal).await
    }

    /// Sends `signal` to the init of the instance with id `id` (an attached run follows its
    /// instance by id: a later one of the same name never gets its signals).
    pub async fn signal_instance_id(&self, id: &str, signal: i32) -> Result<(), EngineError> {
        // Whatever it does to the init, it is no reboot or halt from inside (`power.rs`).
        self.note_signal(id, Some(signal));
        self.driver
            .signal(id, signal)
            .await
            .map_err(EngineError::Driver)
    }
}
