-- wrk script: the same money movements as the ghz runs, over REST, for a side-by-side figure.
--
--   MODE=debit|transfer TOKEN=<customer jwt> ACCOUNT_IDS=<id1,id2,...> \
--     wrk -t 2 -c 50 -d 20s --latency -s benchmarks/load/rest-load.lua http://127.0.0.1:8000
--
-- debit: 10.00 from the first account (the sketch's single hot account);
-- transfer: 10.00 from account i to account i+1, round-robin over ACCOUNT_IDS.
-- Every request has its own reference_id (run, thread, counter): no idempotent replays.
local mode = os.getenv("MODE") or "debit"
local token = os.getenv("TOKEN") or error("TOKEN is not set")
local ids = {}
for id in string.gmatch(os.getenv("ACCOUNT_IDS") or "", "[^,]+") do
  ids[#ids + 1] = id
end
if #ids == 0 then error("ACCOUNT_IDS is not set") end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local run = tostring(os.time())
local counter = 0
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }

function request()
  counter = counter + 1
  local reference = string.format("REST-%s-%s-%d-%d", mode, run, thread_number, counter)
  if mode == "transfer" then
    local i = counter % #ids + 1
    local j = i % #ids + 1
    local body = string.format(
      '{"source_account_id":"%s","destination_account_id":"%s","amount":"10.00",' ..
      '"currency":"USD","description":"Load test transfer","reference_id":"%s"}',
      ids[i], ids[j], reference)
    return wrk.format("POST", "/api/v1/transactions/transfer", headers, body)
  end
  local body = string.format(
    '{"account_id":"%s","amount":"10.00","currency":"USD",' ..
    '"description":"Load test transaction","reference_id":"%s"}', ids[1], reference)
  return wrk.format("POST", "/api/v1/transactions/debit", headers, body)
end
