// SPDX-License-Identifier: MIT OR Apache-2.0
//! newc cpio writer for the guest initramfs (the format the kernel unpacks).

use std::io::{self, Write};

pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    written: usize,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        self.entry(path, 0o040755, &[], 0)
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, 0o100000 | mode, data, 0)
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, 0o020600, &[], (major << 8) | minor)
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8], rdev: u32) -> io::Result<()> {
        let name_len = path.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev >> 8,
            rdev & 0xff,
            name_len,
            0
        );
        self.ino += 1;
        self.write(header.as_bytes())?;
        self.write(path.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len();
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.write(&[0; 3][..n])
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[], 0)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let mut c = Cpio::new(Vec::new());
        c.dir("dev").unwrap();
        c.file("init", 0o755, b"hello").unwrap();
        let out = c.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("init\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
        // header (110) + "dev\0" (4) = 114, padded to 116
        assert_eq!(&out[116..122], b"070701");
    }
}
