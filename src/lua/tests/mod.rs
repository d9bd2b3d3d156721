//! Lua-layer tests over the loopback agent ([`super::loopback`]): the Lua
//! modules of `lua/provium/` and the core run in a Lua state of the test
//! process, against `provium-agent --serve-stdio`. No QEMU is started.
//!
//! Each `*.lua` file here returns a table of test functions
//! `fn(vm, dir)`: `vm` a `provium.Vm` object over a fresh loopback agent,
//! `dir` a fresh host (= "guest") directory. Every function runs, and the
//! Rust test fails naming each one that raised.

use std::path::{Path, PathBuf};

use mlua::{Function, Lua, Table, Value};

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(suite: &str, test: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "provium-loopback-{}-{}-{suite}-{test}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Lua state with `provium` loadable: the modules from `lua/`, the core
/// (plus `core.loopback`) preloaded.
fn lua_state() -> Lua {
    // SAFETY: the standard libraries as `lua5.4` has them (provium's modules
    // use `debug` for the caller's line), in a state of this test alone.
    let lua = unsafe { Lua::unsafe_new() };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
    let setup = || -> mlua::Result<()> {
        let package: Table = lua.globals().get("package")?;
        package.set("path", format!("{0}/?.lua;{0}/?/init.lua", root.display()))?;
        package.set("cpath", "")?;
        let preload: Table = package.get("preload")?;
        preload.set(
            "provium.core",
            lua.create_function(|lua, ()| {
                let core = super::open(lua)?;
                super::loopback::register(lua, &core)?;
                Ok(core)
            })?,
        )?;
        lua.load(HELPERS).set_name("@helpers.lua").exec()
    };
    if let Err(e) = setup() {
        panic!("cannot set up the test Lua state: {e}");
    }
    lua
}

/// Test helpers, as globals of the test state.
const HELPERS: &str = r#"
provium = require("provium")
local Vm = require("provium.vm")
local UD = require("provium.object").UD
local core = require("provium.core")

-- A Vm object over a fresh loopback agent.
function loopback_vm(name)
  return setmetatable({ [UD] = assert(select(2, core.loopback(name or "loop"))) }, Vm)
end

-- Calls fn(...) and returns its error; fails if it did not raise.
function raises(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then error("expected an error, got none", 2) end
  return err
end

-- Asserts that string s contains plain text `want`.
function contains(s, want)
  if type(s) ~= "string" or not s:find(want, 1, true) then
    error(string.format("expected %q to contain %q", tostring(s), want), 2)
  end
end

function eq(got, want)
  if got ~= want then
    error(string.format("expected %s, got %s", tostring(want), tostring(got)), 2)
  end
end
"#;

/// Runs every test of suite `name` (its source `src`); panics listing the
/// failures.
fn run_suite(name: &str, src: &str) {
    let lua = lua_state();
    let suite: Table = match lua.load(src).set_name(format!("@{name}.lua")).eval() {
        Ok(t) => t,
        Err(e) => panic!("{name}.lua does not load: {e}"),
    };
    let mut names: Vec<String> = suite
        .pairs::<String, Function>()
        .filter_map(|p| p.ok().map(|(k, _)| k))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{name}.lua has no tests");
    let mut failed = Vec::new();
    for test in &names {
        let scratch = Scratch::new(name, test);
        let run = || -> mlua::Result<()> {
            let f: Function = suite.get(test.as_str())?;
            let make: Function = lua.globals().get("loopback_vm")?;
            let vm: Value = make.call(test.as_str())?;
            let result = f.call::<()>((vm.clone(), scratch.0.to_string_lossy().to_string()));
            if let Value::Table(t) = &vm {
                let close: Function = t.get("close")?;
                let _ = close.call::<()>(vm.clone());
            }
            lua.gc_collect()?;
            result
        };
        if let Err(e) = run() {
            failed.push(format!("{name}.{test}: {e}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed:\n{}",
        failed.len(),
        names.len(),
        failed.join("\n\n")
    );
}

macro_rules! suites {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            run_suite(stringify!($name), include_str!(concat!(stringify!($name), ".lua")));
        }
    )*};
}

suites!(arguments, batches, errors, lifetimes, raw);
