//! Process helpers shared by the tests that start adapterd or trainers as real processes.

#![allow(dead_code)] // each test file uses what it needs

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a port is bound").local_addr().expect("it has an address").port()
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
pub fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
