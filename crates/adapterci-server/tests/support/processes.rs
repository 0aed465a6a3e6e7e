//! Process helpers shared by the tests that start adapterd or trainers as real processes.

#![allow(dead_code)] // each test file uses what it needs

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a port is bound").local_addr().expect("it has an address").port()
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no process behind; it derefs to the
/// [`Child`](std::process::Child).
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // an exited child is not signalled again (std knows its status once reaped)
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
pub fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
