-- The fixture of scripts/host-smoke.lua: a booted default guest with one file.
local provium = require("provium")
local vm = provium:vm("smoke-fixture", "default")
vm:boot { timeout = tonumber(os.getenv("PROVIUM_SMOKE_BOOT_TIMEOUT") or "") or 120 }
vm:write_file("/etc/smoke-fixture", "built\n")
return vm:snapshot()
