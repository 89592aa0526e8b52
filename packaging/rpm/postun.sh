# picket %postun. RPM has no purge: /var/lib/picket (device key, journal, containment state) is
# kept on erase, like the config files (saved as .rpmsave when changed). Delete it by hand.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
