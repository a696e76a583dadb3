-- Argo CD health check for etl.sluice.dev/ETLPipeline.
--
-- Paste under resource.customizations in argocd-cm (see argocd-cm.yaml beside this file).
--   Paused                                  -> Suspended
--   Failed, or Stalled=True                 -> Degraded
--   RunRequested, Running, PauseRequested   -> Progressing
--   Idle with Ready=True (current generation) -> Healthy
-- A status that has not caught up with the spec's generation is Progressing.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the pipeline"
  return hs
end

local status = obj.status
local phase = status.phase
local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")

if phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = describe(stalled, describe(ready, "Pipeline failed"))
  if status.run ~= nil and status.run.message ~= nil and status.run.message ~= "" then
    hs.message = status.run.message
  end
  return hs
end

if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "Pipeline is paused (spec.desiredState: Paused)"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

if phase == "RunRequested" or phase == "Running" or phase == "PauseRequested" then
  hs.status = "Progressing"
  hs.message = describe(condition(status, "Reconciling"), "Run " .. phase)
  return hs
end

if phase == "Idle" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Pipeline is idle and ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for Ready")
return hs
