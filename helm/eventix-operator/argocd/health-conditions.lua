-- Argo CD health of the eventix kinds (eventix.io/v1alpha1), and of any kind whose operator
-- writes kstatus' conditions. It reads the status the way Flux's kstatus
-- (sigs.k8s.io/cli-utils/pkg/kstatus/status) does, so that both say the same of every phase
-- of every kind (docs/observability.md has the table):
--   status.observedGeneration is not metadata.generation    Progressing   (kstatus InProgress)
--   the first True Reconciling or Stalled condition:
--     Reconciling (a task waiting or running)               Progressing   (InProgress)
--     Stalled (a failed task, an invalid spec)               Degraded      (Failed)
--   else the Ready condition: True                          Healthy       (Current)
--                             False or Unknown              Progressing   (InProgress)
--   else                                                    Healthy       (Current)
-- A resource being deleted is Progressing: Argo CD says so itself, before any script runs
-- (kstatus: Terminating). Nothing is Suspended: Argo CD waits on a Suspended resource in a
-- sync wave as on a Progressing one (argo-cd#24428), while kstatus calls it Current.
-- Lua 5.1 as Argo CD runs it: only the base, table and package libraries (no string.*).
local hs = {}

local function say(health, condition)
  hs.status = health
  if condition.message ~= nil and condition.message ~= "" then
    hs.message = condition.message
  else
    hs.message = condition.reason or ""
  end
  return hs
end

local status = obj.status or {}
local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = tostring(obj.kind) .. " generation is " .. tostring(generation)
    .. ", but latest observed generation is " .. tostring(observed)
  return hs
end

local conditions = status.conditions or {}
for _, c in ipairs(conditions) do
  if c.type == "Reconciling" and c.status == "True" then
    return say("Progressing", c)
  end
  if c.type == "Stalled" and c.status == "True" then
    return say("Degraded", c)
  end
end
for _, c in ipairs(conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      return say("Healthy", c)
    elseif c.status == "False" or c.status == "Unknown" then
      return say("Progressing", c)
    end
  end
end
hs.status = "Healthy"
hs.message = "Resource is current"
return hs
