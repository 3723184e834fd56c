// What a running broker serves, once a second: requests by type, messages and bytes in and out
// (cumulative counts from its JMX metrics). Not a test. Run it beside a benchmark:
//
//     java benchmarks/BrokerRequests.java <broker pid> [interval ms]
//
// It attaches to the broker's JVM (same user, JDK 17; no JMX port needed). Per-second deltas
// of `Produce`, `FetchConsumer`, `MessagesInPerSec` and `BytesInPerSec` during a burst say how
// many requests and bytes a saga costs the broker (the note of issue 10 compares floor and
// product that way).
import com.sun.tools.attach.VirtualMachine;
import javax.management.*;
import javax.management.remote.*;
import java.util.*;

public class BrokerRequests {
    public static void main(String[] a) throws Exception {
        if (a.length == 0) {
            System.err.println("usage: java benchmarks/BrokerRequests.java <broker pid> [interval ms]"
                + " (the pid: pgrep -f kafka.Kafka)");
            System.exit(2);
        }
        int intervalMs = a.length > 1 ? Integer.parseInt(a[1]) : 1000;
        VirtualMachine vm = VirtualMachine.attach(a[0]);
        String addr = vm.startLocalManagementAgent();
        MBeanServerConnection m = JMXConnectorFactory.connect(new JMXServiceURL(addr)).getMBeanServerConnection();
        String[] patterns = {
            "kafka.network:type=RequestMetrics,name=RequestsPerSec,*",
            "kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec",
            "kafka.server:type=BrokerTopicMetrics,name=BytesOutPerSec",
            "kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec",
        };
        while (true) {
            StringBuilder sb = new StringBuilder(String.valueOf(System.currentTimeMillis() / 1000));
            TreeMap<String, Long> counts = new TreeMap<>();
            for (String p : patterns)
                for (ObjectName n : m.queryNames(new ObjectName(p), null)) {
                    String req = n.getKeyProperty("request");
                    String key = req != null ? req : n.getKeyProperty("name");
                    long c = ((Number) m.getAttribute(n, "Count")).longValue();
                    counts.merge(key, c, Long::sum);
                }
            for (Map.Entry<String, Long> e : counts.entrySet())
                if (e.getValue() > 0) sb.append(' ').append(e.getKey()).append('=').append(e.getValue());
            System.out.println(sb); System.out.flush();
            Thread.sleep(intervalMs);
        }
    }
}
