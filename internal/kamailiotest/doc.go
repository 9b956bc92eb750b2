// The package is Linux only (see kamailio.go); this file keeps it a package
// on other systems, where it is empty.

package kamailiotest
