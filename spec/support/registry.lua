-- A real OCI registry for specs and benches: Debian's docker-registry
-- (installed by scripts/setup), on 127.0.0.1 only, its data in a directory
-- the caller owns.
local guest = require("spec.support.guest")
local sh, write, slurp = guest.sh, guest.write, guest.slurp

local M = {}

-- A port nothing listens on now (curl's "connection refused", exit 7).
function M.free_port()
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  for _ = 1, 50 do
    local port = math.random(20000, 59999)
    if select(2, sh(string.format("curl -s -o /dev/null http://127.0.0.1:%d/", port))) == 7 then
      return port
    end
  end
  error("no free port found")
end

--- Starts a registry on 127.0.0.1 storing into `dir/data`; returns its
-- address (`127.0.0.1:port`) and a function that stops it.
function M.start(dir)
  for _ = 1, 5 do
    local port = M.free_port()
    write(dir .. "/config.yml", string.format([[
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
]], dir, port))
    local pid = sh(string.format("docker-registry serve %s/config.yml > %s/registry.log 2>&1 & echo $!", dir, dir))
    pid = assert(tonumber(pid:match("%d+")))
    for _ = 1, 100 do
      if select(2, sh(string.format("curl -sf http://127.0.0.1:%d/v2/ -o /dev/null", port))) == 0 then
        return "127.0.0.1:" .. port, function() sh("kill " .. pid) end
      end
      if select(2, sh("kill -0 " .. pid)) ~= 0 then break end -- it exited (port taken?)
      sh("sleep 0.1")
    end
    sh("kill " .. pid)
  end
  error("the registry did not start: " .. slurp(dir .. "/registry.log"))
end

return M
