/**
 * Alarms on every queue (infra/plan/queues.ts): a dead-letter queue holding a message, and the
 * oldest waiting message older than its role allows. They notify one SNS topic; subscribe an
 * address with KILN_ALARM_EMAIL at deploy time (or any subscriber later).
 */
import { queues } from "./queues";

export const alarmTopic = new aws.sns.Topic("KilnAlarms");

if (process.env.KILN_ALARM_EMAIL) {
  new aws.sns.TopicSubscription("KilnAlarmEmail", {
    topic: alarmTopic.arn,
    protocol: "email",
    endpoint: process.env.KILN_ALARM_EMAIL,
  });
}

for (const q of queues) {
  new aws.cloudwatch.MetricAlarm(`${q.plan.dlqLink}Depth`, {
    alarmDescription: `${q.plan.name}-dlq holds dead letters: inspect with \`kiln dlq list\`, re-run with \`kiln dlq replay\`.`,
    namespace: "AWS/SQS",
    metricName: "ApproximateNumberOfMessagesVisible",
    dimensions: { QueueName: q.dlq.nodes.queue.name },
    statistic: "Maximum",
    period: 60,
    evaluationPeriods: 1,
    threshold: q.plan.dlqDepthAlarm,
    comparisonOperator: "GreaterThanOrEqualToThreshold",
    treatMissingData: "notBreaching",
    alarmActions: [alarmTopic.arn],
  });
  new aws.cloudwatch.MetricAlarm(`${q.plan.link}OldestMessage`, {
    alarmDescription: `${q.plan.name} has waited over ${q.plan.oldestAgeAlarmSeconds} s: no worker is taking messages (capacity, crash loop, or scale-from-zero failing).`,
    namespace: "AWS/SQS",
    metricName: "ApproximateAgeOfOldestMessage",
    dimensions: { QueueName: q.queue.nodes.queue.name },
    statistic: "Maximum",
    period: 60,
    evaluationPeriods: 3,
    threshold: q.plan.oldestAgeAlarmSeconds,
    comparisonOperator: "GreaterThanThreshold",
    treatMissingData: "notBreaching",
    alarmActions: [alarmTopic.arn],
  });
}
