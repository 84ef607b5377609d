import { ArrayNotEmpty, IsArray, IsEmail, IsNotEmpty, IsString } from 'class-validator';
import { EmailNotification, SlackNotification } from '../common/contracts';

// What the notifier accepts, checked by `ValidationPipe` before its handlers run: a notification
// that is not one of these never reaches a handler; a refusal will not change on a retry, so it goes
// to the dead letter `notification.dead` at once (reason `rejected`).

export class SlackRequest implements SlackNotification {
  @IsString()
  @IsNotEmpty()
  request_id!: string;

  @IsString()
  @IsNotEmpty()
  channel!: string;

  @IsString()
  message!: string;
}

export class EmailRequest implements EmailNotification {
  @IsString()
  @IsNotEmpty()
  request_id!: string;

  @IsArray()
  @ArrayNotEmpty()
  @IsEmail({}, { each: true })
  to!: string[];

  @IsString()
  subject!: string;

  @IsString()
  body!: string;

  @IsArray()
  attachments!: EmailNotification['attachments'];
}
