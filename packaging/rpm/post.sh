# picket %post ($1: 1 = install, 2 = upgrade). Config is %config(noreplace); key, journal and
# containment state in /var/lib/picket are never touched.
install -d -m 0700 -o root -g root /var/lib/picket
chmod 0700 /var/lib/picket
if [ ! -e /var/lib/picket/device.key ]; then
    picket identity --config /etc/picket/picket.toml >/dev/null \
        || echo "picket: warning: could not create the device key now; it is created when the agent starts" >&2
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        # picket.service follows the distribution's presets; picket-collect.service stays disabled.
        systemctl preset picket.service >/dev/null 2>&1 || :
    else
        systemctl try-restart picket.service >/dev/null 2>&1 || :
    fi
fi
exit 0
