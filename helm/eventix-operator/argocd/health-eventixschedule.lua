-- Argo CD health of an EventixSchedule (eventix.io/v1alpha1): an invalid schedule is
-- Degraded, a suspended one Suspended, an accepted one Healthy. Lua 5.1, `obj` set.
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
local generation = obj.metadata and obj.metadata.generation
if status == nil or (generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation)) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the schedule"
  return hs
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the schedule"
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or ready.reason or "Not ready"
elseif obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: no ticks fire"
else
  hs.status = "Healthy"
  if status.nextScheduleTime ~= nil then
    hs.message = "Next run at " .. status.nextScheduleTime
  else
    hs.message = ready.message or "Scheduled"
  end
end
return hs
