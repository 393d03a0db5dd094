-- Health of a ProviderConnector, from spec.state and the operator's conditions.
local hs = {}
local state = "Running"
if obj.spec ~= nil and obj.spec.state ~= nil then state = obj.spec.state end
if state == "Paused" or state == "Stopped" then
  hs.status = "Suspended"
  hs.message = "Connector is " .. state
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for ics-operator to report on the connector"
  return hs
end
local conditions = {}
for _, c in ipairs(obj.status.conditions) do conditions[c.type] = c end
local configured = conditions["Configured"]
if configured ~= nil and configured.status == "False" then
  hs.status = "Degraded"
  hs.message = configured.message
  return hs
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif ready ~= nil and ready.reason == "EndpointUnreachable" then
  hs.status = "Degraded"
  hs.message = ready.message
else
  hs.status = "Progressing"
  hs.message = ready ~= nil and ready.message or "Waiting for the Ready condition"
end
return hs
