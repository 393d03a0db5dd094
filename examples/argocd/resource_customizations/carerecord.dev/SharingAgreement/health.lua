-- Health of one side of a SharingAgreement, from its phase and conditions.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for ics-operator to decide on the agreement"
  return hs
end
local message = obj.status.phase
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Active" then message = c.message end
  end
end
local phase = obj.status.phase
if phase == "Active" then
  hs.status = "Healthy"
elseif phase == "Pending" then
  hs.status = "Progressing"
elseif phase == "Expired" then
  hs.status = "Suspended"
else
  -- Invalid or Revoked: records do not flow and a person must act.
  hs.status = "Degraded"
end
hs.message = message
return hs
