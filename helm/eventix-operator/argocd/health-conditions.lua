-- Argo CD health of a resource whose status has kstatus-style `observedGeneration` and a
-- `Ready` condition: EventixWorkerPool and EventixTrigger (eventix.io/v1alpha1).
-- Ready True: Healthy; Ready False: Degraded; not yet observed: Progressing. Lua 5.1.
local hs = {}
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if status == nil or (generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation)) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation or 1)
  return hs
end
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      if c.status == "True" then
        hs.status = "Healthy"
      elseif c.status == "False" then
        hs.status = "Degraded"
      else
        hs.status = "Progressing"
      end
      hs.message = c.message or c.reason or ""
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
