//! What the multi-process benchmarks share: the child-process protocol (re-exec with
//! [`CHILD_ARG`] and `key=value` arguments, `ready`/`go`/`result` lines), CPU and clock helpers,
//! percentiles, the machine description and a removable root directory.
#![allow(dead_code)] // each benchmark uses part of it

pub mod frames;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Stream writers find their per-reader descriptors at `FD_BASE + i` (dup2'd before exec).
pub const FD_BASE: RawFd = 200;

/// Requested kernel buffer of every pipe and socket (pipes: F_SETPIPE_SZ).
pub const STREAM_BUF: libc::c_int = 1 << 20;

/// `F_SETPIPE_SZ`, not exported by every libc version.
pub const F_SETPIPE_SZ: libc::c_int = 1031;

/// user + system CPU time of this process, ns.
pub fn cpu_ns() -> u64 {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of another process so far: the sum of its threads' time on a CPU from
/// /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat counts in 10 ms ticks, too coarse
/// for a fraction of a percent). Falls back to /proc/PID/stat.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            if let Some(v) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return ns as f64 / 1e9;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the ')'.
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    (ut + st) / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[allow(unused_imports)] // not every bench uses it
pub use framecache_testkit::{child_pids, cmdline, Reaper};

/// Sleeps until CLOCK_MONOTONIC reaches `t_ns` (absolute, so pacing does not drift).
pub fn sleep_until(t_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (t_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (t_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: valid timespec; EINTR only makes us retry.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// The median of a sample (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Nearest-rank percentile of a sorted slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub type Kv = HashMap<String, String>;

pub fn parse_kv<'a>(words: impl Iterator<Item = &'a str>) -> Kv {
    words
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn get<T: std::str::FromStr>(kv: &Kv, k: &str) -> T {
    kv.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("missing or bad `{k}` in {kv:?}"))
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .expect("stdout to parent");
}

/// Blocks until the parent sends `go` on stdin.
pub fn wait_go() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    assert_eq!(line.trim(), "go", "unexpected start line");
}

pub struct Proc {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
    pub stdin: Option<ChildStdin>,
}

impl Proc {
    /// Starts a child; `fds` are dup2'd to `FD_BASE + i` in it (they are O_CLOEXEC here, so no
    /// other child inherits them).
    pub fn spawn(args: &[String], stdin: Stdio, fds: Vec<RawFd>) -> Proc {
        Proc::spawn_exe(
            &std::env::current_exe().expect("current_exe"),
            args,
            stdin,
            fds,
        )
    }

    /// As [`Proc::spawn`], running another program that speaks the same child protocol (the
    /// anchors of `benches/anchors/`).
    pub fn spawn_exe(
        exe: &std::path::Path,
        args: &[String],
        stdin: Stdio,
        fds: Vec<RawFd>,
    ) -> Proc {
        let mut cmd = Command::new(exe);
        cmd.arg(CHILD_ARG)
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !fds.is_empty() {
            // SAFETY: only async-signal-safe dup2 calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    for (i, &fd) in fds.iter().enumerate() {
                        if libc::dup2(fd, FD_BASE + i as RawFd) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn child");
        let out = BufReader::new(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        Proc { child, out, stdin }
    }

    /// The next line from the child, which must start with `tag`; its `k=v` words.
    pub fn expect(&mut self, tag: &str) -> Kv {
        let mut line = String::new();
        if self.out.read_line(&mut line).expect("child stdout") == 0 {
            let st = self.child.wait();
            panic!("child exited ({st:?}) before `{tag}`");
        }
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some(tag), "child said {line:?}");
        parse_kv(words)
    }

    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("writer stdin");
        writeln!(stdin, "go")
            .and_then(|_| stdin.flush())
            .expect("send go");
    }

    pub fn finish(mut self) -> Kv {
        let kv = self.expect("result");
        drop(self.stdin.take());
        let st = self.child.wait().expect("wait child");
        assert!(st.success(), "child failed: {st}");
        kv
    }
}

pub struct Outcome {
    pub writer: Kv,
    pub readers: Vec<Kv>,
}

pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {kernel}")
}

/// Removes the private slot root on exit, also when a case panics.
pub struct RootDir(pub PathBuf);

impl Drop for RootDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// First argument that turns the binary into a child process.
pub const CHILD_ARG: &str = "__fc_bench_child";

/// Writes `buf` to every descriptor. Non-blocking with poll, so a slow reader does not stall
/// the others while there is room in their buffers (better than a naive tee loop).
/// SEQPACKET writes are all or nothing, so the same loop serves both socket types.
pub fn broadcast(fds: &[RawFd], buf: &[u8], off: &mut [usize], pfds: &mut Vec<libc::pollfd>) {
    off.fill(0);
    let mut left = fds.len();
    while left > 0 {
        pfds.clear();
        for (j, &fd) in fds.iter().enumerate() {
            while off[j] < buf.len() {
                // SAFETY: in-bounds pointer and length.
                let r =
                    unsafe { libc::write(fd, buf.as_ptr().add(off[j]).cast(), buf.len() - off[j]) };
                if r > 0 {
                    off[j] += r as usize;
                    if off[j] == buf.len() {
                        left -= 1;
                    }
                } else {
                    match errno() {
                        libc::EAGAIN => {
                            pfds.push(libc::pollfd {
                                fd,
                                events: libc::POLLOUT,
                                revents: 0,
                            });
                            break;
                        }
                        libc::EINTR => {}
                        e => panic!("write of {} B to reader: errno {e}", buf.len()),
                    }
                }
            }
        }
        if !pfds.is_empty() {
            // SAFETY: valid pollfd array.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        }
    }
}
