package aescbc
import "testing"
func TestProbe(t *testing.T){ t.Log("useAsm", useAsm, "impls", len(impls())) }
