# vmshift: first boot on KVM. Runs once as SYSTEM, logs every step to
# @LOG@, then removes itself. PowerShell 2.0 and WMI only, so it
# runs unchanged from Windows 7 / Server 2008 R2 on.
$ErrorActionPreference = 'Continue'
$Log = '@LOG@'

function Say([string]$Message) {
    $line = '{0} {1}' -f (Get-Date -Format 's'), $Message
    Add-Content -Path $Log -Value $line
}

function Run([string]$Exe, [string]$Arguments) {
    Say ('run: {0} {1}' -f $Exe, $Arguments)
    $p = Start-Process -FilePath $Exe -ArgumentList $Arguments -Wait -PassThru -WindowStyle Hidden
    Say ('exit {0}' -f $p.ExitCode)
}

# The NIC with this MAC, once Plug and Play has bound netkvm to it.
function Wait-Nic([string]$Mac, [int]$Seconds) {
    for ($i = 0; $i -lt $Seconds; $i += 2) {
        $cfg = Get-WmiObject Win32_NetworkAdapterConfiguration |
            Where-Object { $_.MACAddress -eq $Mac }
        if ($cfg) { return $cfg }
        Start-Sleep -Seconds 2
    }
    return $null
}

function Restore-Nic([string]$Mac, [string[]]$Ips, [string[]]$Masks, [string[]]$Gateways,
                     [string[]]$Dns, [string[]]$Dns6) {
    $cfg = Wait-Nic $Mac 300
    if (-not $cfg) { Say ('network: no NIC with MAC {0} appeared' -f $Mac); return }
    if ($Ips.Count -gt 0) {
        $r = $cfg.EnableStatic($Ips, $Masks)
        Say ('network: {0}: addresses {1} (result {2})' -f $Mac, ($Ips -join ','), $r.ReturnValue)
    }
    if ($Gateways.Count -gt 0) {
        $metrics = @($Gateways | ForEach-Object { [uint16]1 })
        $r = $cfg.SetGateways($Gateways, $metrics)
        Say ('network: {0}: gateways {1} (result {2})' -f $Mac, ($Gateways -join ','), $r.ReturnValue)
    }
    if ($Dns.Count -gt 0) {
        $r = $cfg.SetDNSServerSearchOrder($Dns)
        Say ('network: {0}: DNS {1} (result {2})' -f $Mac, ($Dns -join ','), $r.ReturnValue)
    }
    if ($Dns6.Count -gt 0) {
        $name = (Get-WmiObject Win32_NetworkAdapter | Where-Object { $_.MACAddress -eq $Mac }).NetConnectionID
        $n = 1
        foreach ($server in $Dns6) {
            Run 'netsh.exe' ('interface ipv6 add dnsserver name="{0}" address={1} index={2}' -f $name, $server, $n)
            $n += 1
        }
    }
}

Say 'start'
@STEPS@
Say 'done'
@REMOVE@
Remove-Item -Path $MyInvocation.MyCommand.Path -Force
