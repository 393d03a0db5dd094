-- Health of a CareRecordTenant, from the operator's conditions.
local hs = {}
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Tenant is suspended: record store scaled to zero, data kept"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for ics-operator to report on the tenant"
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    local generation = obj.metadata.generation
    if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
      hs.status = "Progressing"
      hs.message = "Waiting for ics-operator to act on the latest spec"
    elseif c.status == "True" then
      hs.status = "Healthy"
      hs.message = c.message
    elseif obj.status.phase == "Degraded" or c.reason == "InvalidSpec" or c.reason == "CloudNativePGNotInstalled" then
      hs.status = "Degraded"
      hs.message = c.message
    else
      hs.status = "Progressing"
      hs.message = c.message
    end
    return hs
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
