package tun

// SAPair is saPair for the external tests (package tun_test).
var SAPair = saPair

// PadRun is padRun for the external tests.
var PadRun = padRun
