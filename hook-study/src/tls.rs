//! OpenSSL through dlopen (the system's libssl.so.3, as any dynamically
//! linked client uses it): a TLS client stream and a small keep-alive TLS
//! HTTP server for the uprobe cell. No Rust TLS crate: the point is that the
//! client calls the library's own `SSL_write`, where the uprobe sits.
use std::ffi::{c_char, c_int, c_void, CString};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};

pub const LIBSSL: &str = "libssl.so.3";

type Method = unsafe extern "C" fn() -> *const c_void;
type CtxNew = unsafe extern "C" fn(*const c_void) -> *mut c_void;
type UseFile = unsafe extern "C" fn(*mut c_void, *const c_char, c_int) -> c_int;
type SslNew = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type SetFd = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type Handshake = unsafe extern "C" fn(*mut c_void) -> c_int;
type Rw = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int;
type Free = unsafe extern "C" fn(*mut c_void);
type Version = unsafe extern "C" fn(*const c_void) -> *const c_char;

pub struct Lib {
    client_method: Method,
    server_method: Method,
    ctx_new: CtxNew,
    use_cert: UseFile,
    use_key: UseFile,
    ssl_new: SslNew,
    set_fd: SetFd,
    connect: Handshake,
    accept: Handshake,
    read: Rw,
    write: Rw,
    free: Free,
    version: Version,
}

// SAFETY: function pointers into a library that stays loaded; OpenSSL 3 is
// thread safe for distinct SSL objects.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

fn sym<T: Copy>(h: *mut c_void, name: &str) -> Result<T> {
    let c = CString::new(name)?;
    // SAFETY: h is a live dlopen handle; the symbol's type is T by OpenSSL's API.
    let p = unsafe { libc::dlsym(h, c.as_ptr()) };
    if p.is_null() {
        return Err(anyhow!("{LIBSSL} has no {name}"));
    }
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

fn open() -> Result<Lib> {
    let c = CString::new(LIBSSL)?;
    // SAFETY: dlopen of a system library; never closed.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        return Err(anyhow!("dlopen {LIBSSL} failed (is libssl3 installed?)"));
    }
    Ok(Lib {
        client_method: sym(h, "TLS_client_method")?,
        server_method: sym(h, "TLS_server_method")?,
        ctx_new: sym(h, "SSL_CTX_new")?,
        use_cert: sym(h, "SSL_CTX_use_certificate_file")?,
        use_key: sym(h, "SSL_CTX_use_PrivateKey_file")?,
        ssl_new: sym(h, "SSL_new")?,
        set_fd: sym(h, "SSL_set_fd")?,
        connect: sym(h, "SSL_connect")?,
        accept: sym(h, "SSL_accept")?,
        read: sym(h, "SSL_read")?,
        write: sym(h, "SSL_write")?,
        free: sym(h, "SSL_free")?,
        version: sym(h, "SSL_get_version")?,
    })
}

pub fn lib() -> Result<&'static Lib> {
    LIB.get_or_init(|| open().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// The library file the dynamic loader picks (for the uprobe), from
/// /proc/self/maps after loading it.
pub fn library_path() -> Result<String> {
    lib()?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with(LIBSSL))
        .map(str::to_string)
        .context("libssl not mapped after dlopen")
}

pub struct TlsStream {
    lib: &'static Lib,
    ssl: *mut c_void,
    _sock: TcpStream,
}

impl TlsStream {
    pub fn connect(lib: &'static Lib, sock: TcpStream) -> Result<TlsStream> {
        // SAFETY: OpenSSL calls on objects created here; the context is
        // reference counted by the SSL object (leaked once per process).
        unsafe {
            let ctx = (lib.ctx_new)((lib.client_method)());
            if ctx.is_null() {
                return Err(anyhow!("SSL_CTX_new failed"));
            }
            let ssl = (lib.ssl_new)(ctx);
            if ssl.is_null() || (lib.set_fd)(ssl, sock.as_raw_fd()) != 1 {
                return Err(anyhow!("SSL_new/SSL_set_fd failed"));
            }
            if (lib.connect)(ssl) != 1 {
                (lib.free)(ssl);
                return Err(anyhow!("TLS handshake failed"));
            }
            Ok(TlsStream {
                lib,
                ssl,
                _sock: sock,
            })
        }
    }

    fn accept(lib: &'static Lib, ctx: *mut c_void, sock: TcpStream) -> Result<TlsStream> {
        // SAFETY: as above.
        unsafe {
            let ssl = (lib.ssl_new)(ctx);
            if ssl.is_null() || (lib.set_fd)(ssl, sock.as_raw_fd()) != 1 {
                return Err(anyhow!("SSL_new/SSL_set_fd failed"));
            }
            if (lib.accept)(ssl) != 1 {
                (lib.free)(ssl);
                return Err(anyhow!("TLS accept failed"));
            }
            Ok(TlsStream {
                lib,
                ssl,
                _sock: sock,
            })
        }
    }

    pub fn version(&self) -> String {
        // SAFETY: returns a static string.
        let p = unsafe { (self.lib.version)(self.ssl) };
        if p.is_null() {
            return "?".into();
        }
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(i32::MAX as usize) as c_int;
        // SAFETY: buf is valid for n bytes.
        let r = unsafe { (self.lib.read)(self.ssl, buf.as_mut_ptr().cast(), n) };
        if r > 0 {
            Ok(r as usize)
        } else if r == 0 {
            Ok(0)
        } else {
            Err(io::Error::from_raw_os_error(libc::ECONNRESET))
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(i32::MAX as usize) as c_int;
        // SAFETY: buf is valid for n bytes; SSL_write does not write to it.
        let r = unsafe { (self.lib.write)(self.ssl, buf.as_ptr() as *mut c_void, n) };
        if r > 0 {
            Ok(r as usize)
        } else {
            Err(io::Error::from_raw_os_error(libc::EPIPE))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // SAFETY: ssl came from SSL_new and is freed once.
        unsafe { (self.lib.free)(self.ssl) };
    }
}

/// A keep-alive TLS HTTP server on `listener` (answers every request with
/// 200 and a fixed body) until dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct Ctx(*mut c_void);
// SAFETY: an SSL_CTX is shared read-only after setup (OpenSSL 3 locks it).
unsafe impl Send for Ctx {}
unsafe impl Sync for Ctx {}

impl Server {
    pub fn start(listener: TcpListener, cert: &str, key: &str) -> Result<Server> {
        let lib = lib()?;
        let (c, k) = (CString::new(cert)?, CString::new(key)?);
        // SAFETY: OpenSSL setup calls with valid C strings.
        let ctx = unsafe {
            let ctx = (lib.ctx_new)((lib.server_method)());
            if ctx.is_null()
                || (lib.use_cert)(ctx, c.as_ptr(), 1) != 1
                || (lib.use_key)(ctx, k.as_ptr(), 1) != 1
            {
                return Err(anyhow!("TLS server: loading {cert} / {key} failed"));
            }
            ctx
        };
        let ctx = Arc::new(Ctx(ctx));
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let ctx = ctx.clone();
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        std::thread::spawn(move || serve(lib, &ctx, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Server {
            stop,
            handle: Some(handle),
        })
    }
}

fn serve(lib: &'static Lib, ctx: &Ctx, s: TcpStream) {
    let Ok(mut t) = TlsStream::accept(lib, ctx.0, s) else {
        return;
    };
    let body = "i-0123456789abcdef0";
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::new();
    // Bounded: the client's own loop is bounded, and reads time out.
    for _ in 0..1_000_000 {
        let Ok(h) = crate::util::read_head(&mut t, &mut buf) else {
            return;
        };
        buf.drain(..h);
        if t.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
