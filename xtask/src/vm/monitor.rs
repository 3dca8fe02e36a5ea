// SPDX-License-Identifier: MIT OR Apache-2.0
//! QEMU's human monitor on a unix socket in the run's directory, asked
//! where the vCPUs are when a guest stops answering (`info registers -a`).

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

/// The socket's name beside the run's initramfs.
pub const SOCKET: &str = "monitor.sock";

/// The registers that say where a vCPU is and at which privilege level,
/// for arm64 (PC, the link register, SP, PSTATE) and x86-64.
const WANTED: &[&str] = &["PC", "X30", "SP", "PSTATE", "RIP", "RSP", "CPL"];

/// One line per vCPU, or one line saying why there are none (a monitor
/// that does not answer means QEMU itself is stuck, not the guest).
pub fn cpu_state(socket: &Path) -> Vec<String> {
    match ask(socket, "info registers -a") {
        Ok(text) => {
            let cpus = summarize(&text);
            if cpus.is_empty() {
                vec![format!(
                    "QEMU's monitor answered without registers: {:?}",
                    text.chars().take(200).collect::<String>()
                )]
            } else {
                cpus
            }
        }
        Err(e) => vec![format!(
            "QEMU's monitor did not answer ({e}): QEMU itself is stuck"
        )],
    }
}

/// Sends one command and reads up to the next prompt (5 s at most).
fn ask(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    let read_to_prompt = |stream: &mut UnixStream, text: &mut String| {
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline && !text.ends_with("(qemu) ") {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    read_to_prompt(&mut stream, &mut text)?;
    if !text.ends_with("(qemu) ") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no prompt in 5 s",
        ));
    }
    text.clear();
    stream.write_all(format!("{command}\n").as_bytes())?;
    read_to_prompt(&mut stream, &mut text)?;
    Ok(text)
}

/// "cpu 0: PC=... X30=... SP=... PSTATE=... EL1h" per `CPU#n` section.
fn summarize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for section in text.split("CPU#").skip(1) {
        let (index, body) = section.split_once(['\r', '\n']).unwrap_or((section, ""));
        let mut fields: Vec<String> = Vec::new();
        for name in WANTED {
            let prefix = format!("{name}=");
            if let Some(tok) = body.split_whitespace().find(|t| t.starts_with(&prefix)) {
                fields.push(tok.to_string());
            }
        }
        // arm64's exception level and stack (EL1h: the kernel on SP_EL1).
        if let Some(el) = body
            .split_whitespace()
            .find(|t| t.starts_with("EL") && t.len() <= 4)
        {
            fields.push(el.to_string());
        }
        out.push(format!("vCPU {}: {}", index.trim(), fields.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_arm64_and_x86_dumps() {
        let arm = "info registers -a\r\n\r\nCPU#0\r\n PC=ffff800008010000 X00=0000000000000000 X01=1\r\n\
                   X29=ffff80000a003e50 X30=ffff8000080a1234  SP=ffff80000a003e50\r\n\
                   PSTATE=600003c5 -ZC- EL1h     FPCR=00000000\r\n\r\nCPU#1\r\n PC=0000aaaad0001000 X30=0000aaaad0000f00  SP=0000ffffc0000000\r\nPSTATE=80000000 N--- EL0t\r\n(qemu) ";
        assert_eq!(
            summarize(arm),
            [
                "vCPU 0: PC=ffff800008010000 X30=ffff8000080a1234 SP=ffff80000a003e50 PSTATE=600003c5 EL1h",
                "vCPU 1: PC=0000aaaad0001000 X30=0000aaaad0000f00 SP=0000ffffc0000000 PSTATE=80000000 EL0t",
            ]
        );
        let x86 = "\nCPU#0\nRAX=0 RBX=1\nRSP=ffffc90000003e80 RBP=0\nRIP=ffffffff81000000 RFL=00000246 [---Z-P-] CPL=0 II=0\n(qemu) ";
        assert_eq!(
            summarize(x86),
            ["vCPU 0: RIP=ffffffff81000000 RSP=ffffc90000003e80 CPL=0"]
        );
        assert!(summarize("(qemu) ").is_empty());
    }
}
