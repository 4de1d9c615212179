// Readiness probe used by scripts/stack when no Python with kafka-python is at hand:
// `java -cp 'libs/*' KafkaReady.java HOST:PORT` exits 0 once a metadata request lists at least one broker.
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;

public class KafkaReady {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("request.timeout.ms", "3000");
        props.put("default.api.timeout.ms", "4000");
        try (Admin admin = Admin.create(props)) {
            int brokers = admin.describeCluster().nodes().get().size();
            System.exit(brokers > 0 ? 0 : 1);
        } catch (Exception e) {
            System.err.println(e);
            System.exit(1);
        }
    }
}
