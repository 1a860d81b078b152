//! The external reward program (`--reward-cmd PROG`).
//!
//! The program is started once and runs for the whole training. For each completion it is sent
//! one JSON object on a line of its stdin,
//! `{"prompt": …, "completion": …, "answer": …, "tokens": …, "truncated": …}`,
//! and answers with one number on a line of its stdout, in order; its stderr goes to the user's
//! terminal. A writer thread feeds stdin and a reader thread drains stdout, so a batch larger
//! than the pipe buffers cannot deadlock, and every answer is awaited with a timeout.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use super::{Completion, Reward, RewardError};

/// How long a program that stopped reading or answering gets to exit before it is reported.
const GRACE: Duration = Duration::from_secs(2);

/// What the I/O threads report.
enum Event {
    /// A line of output, newline included.
    Line(String),
    /// The program closed its output.
    Eof,
    /// Reading its output failed.
    ReadFailed(io::Error),
    /// Writing to its input failed; the writer has stopped.
    WriteFailed(io::Error),
}

/// One request line.
#[derive(serde::Serialize)]
struct Request<'a> {
    prompt: &'a str,
    completion: &'a str,
    answer: &'a str,
    tokens: usize,
    truncated: bool,
}

/// A running reward program: one finite number per completion, read from its output.
///
/// After any error the program is killed and every later call fails with
/// [`RewardError::Dead`]. Dropping it kills and reaps the process.
pub struct Program {
    /// The command line, for messages.
    name: String,
    child: Child,
    /// Batches to the writer thread; `None` once stopped.
    requests: Option<Sender<Vec<u8>>>,
    events: Receiver<Event>,
    timeout: Duration,
    /// Lines read over the program's lifetime.
    lines: usize,
    dead: bool,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("command", &self.name)
            .field("pid", &self.child.id())
            .field("lines", &self.lines)
            .field("dead", &self.dead)
            .finish()
    }
}

impl Program {
    /// Starts `argv` (program and arguments); each answer is awaited at most `timeout`.
    pub fn spawn(argv: &[String], timeout: Duration) -> Result<Self, RewardError> {
        let (exe, args) = argv.split_first().ok_or(RewardError::EmptyCommand)?;
        let name = argv.join(" ");
        let start_error = |source| RewardError::Start {
            program: name.clone(),
            source,
        };
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // a process group of its own: Ctrl-C in the terminal stops the trainer after its step,
        // and must not kill the program that scores that step (the trainer ends it on drop)
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(start_error)?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (events_tx, events) = mpsc::channel();
        let (requests, requests_rx) = mpsc::channel();
        let started = match (stdin, stdout) {
            (Some(stdin), Some(stdout)) => start_threads(stdin, stdout, requests_rx, events_tx),
            _ => Err(io::Error::other("no pipes to the process")),
        };
        if let Err(source) = started {
            let _ = child.kill();
            let _ = child.wait();
            return Err(start_error(source));
        }
        Ok(Program {
            name,
            child,
            requests: Some(requests),
            events,
            timeout,
            lines: 0,
            dead: false,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends the batch and reads its answers.
    fn exchange(&mut self, batch: &[Completion<'_>]) -> Result<Vec<f32>, RewardError> {
        let n = batch.len();
        // output before any request is out of step with the completions
        match self.events.try_recv() {
            Ok(Event::Line(text)) => {
                self.lines += 1;
                return Err(RewardError::Unexpected {
                    program: self.name.clone(),
                    line: self.lines,
                    text,
                });
            }
            Ok(Event::Eof) | Err(TryRecvError::Disconnected) => return Err(self.exited(0, n)),
            Ok(Event::ReadFailed(source)) => {
                return Err(RewardError::Read {
                    program: self.name.clone(),
                    source,
                });
            }
            Ok(Event::WriteFailed(source)) => return Err(self.write_failed(source, 0, n)),
            Err(TryRecvError::Empty) => {}
        }
        let mut buf = Vec::new();
        for c in batch {
            let request = Request {
                prompt: c.prompt,
                completion: c.completion,
                answer: c.answer,
                tokens: c.tokens,
                truncated: c.truncated,
            };
            serde_json::to_writer(&mut buf, &request).expect("strings and numbers always serialise");
            buf.push(b'\n');
        }
        let sent = self.requests.as_ref().is_some_and(|r| r.send(buf).is_ok());
        // after a failed write the program cannot get the rest of the batch: it has `GRACE` to
        // answer from what it got or to exit, then the write error is reported
        let mut write_error =
            (!sent).then(|| io::Error::new(io::ErrorKind::BrokenPipe, "the writer stopped"));
        let mut scores = Vec::with_capacity(n);
        while scores.len() < n {
            let index = scores.len();
            let wait = if write_error.is_some() {
                GRACE
            } else {
                self.timeout
            };
            let event = match self.events.recv_timeout(wait) {
                Ok(event) => event,
                Err(RecvTimeoutError::Disconnected) => Event::Eof,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(match write_error {
                        Some(source) => self.write_failed(source, index, n),
                        None => RewardError::Timeout {
                            program: self.name.clone(),
                            timeout: self.timeout,
                            index,
                            batch: n,
                        },
                    });
                }
            };
            match event {
                Event::Line(text) => {
                    self.lines += 1;
                    match text.trim().parse::<f32>() {
                        Ok(x) if x.is_finite() => scores.push(x),
                        _ => {
                            return Err(RewardError::NotANumber {
                                program: self.name.clone(),
                                line: self.lines,
                                text,
                                index,
                                batch: n,
                            });
                        }
                    }
                }
                Event::Eof => return Err(self.exited(index, n)),
                Event::ReadFailed(source) => {
                    return Err(RewardError::Read {
                        program: self.name.clone(),
                        source,
                    });
                }
                Event::WriteFailed(source) => write_error = Some(source),
            }
        }
        Ok(scores)
    }

    /// The error for a program whose output ended after `answered` of `expected` answers.
    fn exited(&mut self, answered: usize, expected: usize) -> RewardError {
        let status = self.wait_briefly();
        RewardError::Exited {
            program: self.name.clone(),
            status,
            answered,
            expected,
        }
    }

    /// The error for a failed write: the program's exit if it exits soon, else the write error.
    fn write_failed(&mut self, source: io::Error, answered: usize, expected: usize) -> RewardError {
        match self.wait_briefly() {
            Some(status) => RewardError::Exited {
                program: self.name.clone(),
                status: Some(status),
                answered,
                expected,
            },
            None => RewardError::Write {
                program: self.name.clone(),
                source,
            },
        }
    }

    /// The exit status if the program exits within `GRACE`.
    fn wait_briefly(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    /// Stops the writer, kills and reaps the process.
    fn stop(&mut self) {
        self.requests = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reward for Program {
    fn name(&self) -> &str {
        "cmd"
    }

    fn score(&mut self, batch: &[Completion<'_>]) -> Result<Vec<f32>, RewardError> {
        if self.dead {
            return Err(RewardError::Dead {
                program: self.name.clone(),
            });
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let scores = self.exchange(batch);
        if scores.is_err() {
            self.dead = true;
            self.stop();
        }
        scores
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the writer (batches → stdin) and the reader (stdout lines → events) threads.
fn start_threads(
    mut stdin: ChildStdin,
    stdout: ChildStdout,
    requests: Receiver<Vec<u8>>,
    events: Sender<Event>,
) -> io::Result<()> {
    let write_events = events.clone();
    thread::Builder::new()
        .name("reward-writer".into())
        .spawn(move || {
            for buf in requests {
                if let Err(e) = stdin.write_all(&buf).and_then(|()| stdin.flush()) {
                    let _ = write_events.send(Event::WriteFailed(e));
                    return;
                }
            }
        })?;
    thread::Builder::new()
        .name("reward-reader".into())
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let event = match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => Event::Eof,
                    Ok(_) => Event::Line(String::from_utf8_lossy(&buf).into_owned()),
                    Err(e) => Event::ReadFailed(e),
                };
                let last = !matches!(event, Event::Line(_));
                if events.send(event).is_err() || last {
                    return;
                }
            }
        })?;
    Ok(())
}
