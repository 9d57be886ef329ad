-- Argo CD health of an EventixTask (eventix.io/v1alpha1), from the status the operator
-- mirrors from the queue. Argo CD runs this with Lua 5.1 (gopher-lua) and `obj` set.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to enqueue the task"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see generation " .. tostring(generation)
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = ready.message or "The operator cannot act on this spec"
  return hs
end

local function failure()
  if status.error ~= nil then
    return (status.error.type or "Error") .. ": " .. (status.error.message or "")
  end
  return ""
end

local phase = status.phase
local attempts = tostring(status.attempts or 0)
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded on attempt " .. attempts
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed after " .. attempts .. " attempt(s): " .. failure()
elseif phase == "Cancelled" then
  -- Not a failure, and nothing runs: it waits for a person (`eventix tasks retry`).
  hs.status = "Suspended"
  hs.message = "Cancelled before it started"
elseif phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Waiting in the queue until " .. (status.nextAttemptAt or "a worker is free")
elseif phase == "Running" then
  hs.status = "Progressing"
  hs.message = "Attempt " .. attempts .. " running"
elseif phase == "Retrying" then
  hs.status = "Progressing"
  hs.message = "Attempt " .. attempts .. " failed (" .. failure() .. "); next at " .. (status.nextAttemptAt or "?")
else
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to enqueue the task"
end
return hs
